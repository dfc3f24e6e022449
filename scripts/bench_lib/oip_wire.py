"""The two OIP gRPC messages the benchmark sends and reads, in protobuf's wire format.

``ModelInferRequest`` and ``ModelInferResponse`` of ``protos/grpc_service.proto``, with
tensors as ``raw_input_contents`` / ``raw_output_contents`` (what tritonclient and
perf_analyzer send). Written by hand, about as long as the generated code's import lines,
so that the harness never imports zeroserve (``--only-baseline`` works without it) and
needs no protoc. Only the fields used here are written; unknown fields are skipped on read.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

# field numbers of protos/grpc_service.proto
_REQ_MODEL_NAME, _REQ_INPUTS, _REQ_OUTPUTS, _REQ_RAW = 1, 5, 6, 7
_RESP_MODEL_NAME, _RESP_MODEL_VERSION, _RESP_OUTPUTS, _RESP_RAW = 1, 2, 5, 6
_TENSOR_NAME, _TENSOR_DATATYPE, _TENSOR_SHAPE = 1, 2, 3
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class WireError(ValueError):
    """Bytes that are not a well-formed message of the kind expected."""


@dataclass(frozen=True)
class Tensor:
    """A tensor's metadata and its raw little-endian bytes (row-major)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes


@dataclass(frozen=True)
class InferResponse:
    """The parts of a ``ModelInferResponse`` the benchmark reads."""

    model_name: str
    model_version: str
    outputs: tuple[Tensor, ...]


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 travels as ten bytes, two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, message, packed repeated)."""
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _tensor_meta(name: str, datatype: str, shape: tuple[int, ...]) -> bytes:
    return (_field(_TENSOR_NAME, name.encode()) + _field(_TENSOR_DATATYPE, datatype.encode())
            + _field(_TENSOR_SHAPE, b"".join(_varint(d) for d in shape)))


def encode_infer_request(model: str, inputs: list[Tensor], outputs: list[str]) -> bytes:
    """A ``ModelInferRequest`` for ``model`` with raw input contents, asking for ``outputs``."""
    parts = [_field(_REQ_MODEL_NAME, model.encode())]
    parts += [_field(_REQ_INPUTS, _tensor_meta(t.name, t.datatype, t.shape)) for t in inputs]
    parts += [_field(_REQ_OUTPUTS, _field(_TENSOR_NAME, name.encode())) for name in outputs]
    parts += [_field(_REQ_RAW, t.raw) for t in inputs]
    return b"".join(parts)


def encode_infer_response(model: str, version: str, outputs: list[Tensor]) -> bytes:
    """A ``ModelInferResponse`` with raw output contents, as the gateway writes it."""
    parts = [_field(_RESP_MODEL_NAME, model.encode()),
             _field(_RESP_MODEL_VERSION, version.encode())]
    parts += [_field(_RESP_OUTPUTS, _tensor_meta(t.name, t.datatype, t.shape))
              for t in outputs]
    parts += [_field(_RESP_RAW, t.raw) for t in outputs]
    return b"".join(parts)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of every field of one message: an int for varints, the
    payload bytes for length-delimited fields; fixed-width fields are skipped."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, kind = key >> 3, key & 7
        if kind == _VARINT:
            value, pos = _read_varint(data, pos)
            out.append((number, value))
        elif kind == _LEN:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise WireError(f"field {number} runs past the end of the message")
            out.append((number, data[pos:pos + length]))
            pos += length
        elif kind in (_I64, _I32):
            pos += 8 if kind == _I64 else 4
        else:
            raise WireError(f"unsupported wire type {kind} (field {number})")
    if pos != len(data):
        raise WireError("message ends inside a field")
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _tensor_meta_of(data: bytes) -> tuple[str, str, tuple[int, ...]]:
    name = datatype = ""
    shape: list[int] = []
    for number, value in _fields(data):
        if number == _TENSOR_NAME and isinstance(value, bytes):
            name = value.decode()
        elif number == _TENSOR_DATATYPE and isinstance(value, bytes):
            datatype = value.decode()
        elif number == _TENSOR_SHAPE:
            if isinstance(value, int):  # unpacked
                shape.append(_signed(value))
            else:
                pos = 0
                while pos < len(value):
                    dim, pos = _read_varint(value, pos)
                    shape.append(_signed(dim))
    return name, datatype, tuple(shape)


def decode_infer_response(data: bytes) -> InferResponse:
    """Read a ``ModelInferResponse``; outputs pair with raw contents by position.
    Raises WireError when it is not one, or its raw contents do not match its outputs."""
    model = version = ""
    metas: list[tuple[str, str, tuple[int, ...]]] = []
    raws: list[bytes] = []
    for number, value in _fields(data):
        if not isinstance(value, bytes):
            continue
        if number == _RESP_MODEL_NAME:
            model = value.decode()
        elif number == _RESP_MODEL_VERSION:
            version = value.decode()
        elif number == _RESP_OUTPUTS:
            metas.append(_tensor_meta_of(value))
        elif number == _RESP_RAW:
            raws.append(value)
    if len(raws) != len(metas):
        raise WireError(f"{len(raws)} raw_output_contents for {len(metas)} outputs")
    return InferResponse(model, version, tuple(
        Tensor(name, datatype, shape, raw) for (name, datatype, shape), raw in zip(metas, raws)))


def grpc_frame(message: bytes) -> bytes:
    """``message`` as one gRPC length-prefixed message (uncompressed), the body of an
    HTTP/2 request to a gRPC method."""
    return b"\0" + struct.pack(">I", len(message)) + message
