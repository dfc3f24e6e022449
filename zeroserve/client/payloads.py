"""What the client SDK sends and reads, independent of the connection (pure).

Calls (``service/endpoint``) carry the codec's msgpack with every tensor inline,
on the REST route or in ``zeroserve.v1.Serving/Call``; a stream's chunks come over REST in
the msgpack stream framing (:class:`StreamFrames`). Inference (``infer``)
speaks the Open Inference Protocol: binary tensors over HTTP, raw contents over
gRPC.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from zeroserve.client.errors import ServerError, ZeroserveError, from_http
from zeroserve.grpc_gen import grpc_service_pb2 as oip_pb
from zeroserve.wire import codec
from zeroserve.wire.oip_tensors import (
    TensorError,
    datatype_of,
    from_json,
    from_raw,
    numpy_dtype,
    to_raw,
)

MSGPACK = "application/msgpack"
STREAM_MSGPACK = "application/vnd.zeroserve.stream+msgpack"
TIMEOUT_HEADER = "X-Zeroserve-Timeout"
VERSION_HEADER = "X-Zeroserve-Version"  # the service version a call names
VERSION_METADATA = "x-zeroserve-version"  # ... as gRPC metadata
STREAM_IDLE_HEADER = "X-Zeroserve-Stream-Idle-Timeout"
HEADER_LENGTH = "Inference-Header-Content-Length"
_INLINE = 1 << 62


def encode_inputs(inputs: Mapping[str, Any]) -> bytes:
    """Named inputs as one msgpack payload."""
    return codec.encode(dict(inputs), threshold=_INLINE)[0]


def encode_inputs_parts(inputs: Mapping[str, Any]) -> bytes | list[bytes | memoryview]:
    """:func:`encode_inputs` as the parts of its bytes, a large tensor's a view of its memory
    (:func:`zeroserve.wire.codec.encode_parts`); the bytes themselves when there is one."""
    parts = codec.encode_parts(dict(inputs))
    return parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else parts


def decode_value(payload: bytes) -> Any:
    """An endpoint's answer from its msgpack payload."""
    try:
        return codec.decode(payload)
    except codec.CodecError as exc:
        raise ServerError(500, f"the gateway sent an undecodable answer: {exc}") from None


def http_error(status: int, body: bytes, retry_after: str | None = None) -> ZeroserveError:
    """The exception of an HTTP error answer, with the ``error`` message of its JSON body and
    its ``Retry-After`` header (seconds; an HTTP date is ignored)."""
    try:
        doc = json.loads(body)
        message = str(doc["error"]) if isinstance(doc, dict) and "error" in doc else \
            body.decode(errors="replace")
    except ValueError:
        message = body.decode(errors="replace") or f"HTTP {status}"
    try:
        retry_after_s = None if retry_after is None else max(0.0, float(retry_after))
    except ValueError:
        retry_after_s = None
    return from_http(status, message, retry_after_s)


class StreamFrames:
    """Reads a stream in the msgpack stream framing as its bytes arrive: frames of a 4-byte
    big-endian length, then one map in the codec, ``{"data": value}`` per chunk, then
    ``{"done": true, "chunks": n}`` or ``{"error": message, "status": s}``.

    After :meth:`feed`, ``done`` says the end came and ``error`` holds the typed exception
    of an error frame (raise it once the chunks before it are taken)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.chunks = 0
        self.done = False
        self.error: ZeroserveError | None = None

    @property
    def ended(self) -> bool:
        return self.done or self.error is not None

    def feed(self, data: bytes) -> list[Any]:
        """The values of the chunks that ``data`` completes, in order (none past the end).
        Raises :class:`ServerError` for a malformed frame."""
        self._buffer += data
        values: list[Any] = []
        start = 0
        while not self.ended and len(self._buffer) - start >= 4:
            end = start + 4 + int.from_bytes(self._buffer[start:start + 4], "big")
            if len(self._buffer) < end:
                break
            event = decode_value(bytes(self._buffer[start + 4:end]))
            start = end
            if isinstance(event, dict) and "data" in event:
                values.append(event["data"])
                self.chunks += 1
            elif isinstance(event, dict) and event.get("done") is True:
                self.done = True
            else:
                self.error = _stream_error(event)
        del self._buffer[:start]
        return values


def _stream_error(event: Any) -> ZeroserveError:
    status = event.get("status") if isinstance(event, dict) else None
    if not isinstance(status, int) or "error" not in event:
        return ServerError(500, "the gateway sent a malformed stream frame")
    return from_http(status, str(event["error"]))


def _arrays(inputs: Mapping[str, Any]) -> list[tuple[str, np.ndarray]]:
    out = []
    for name, value in inputs.items():
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.dtype.kind == "U":
            arr = arr.astype(object)
        out.append((name, arr))
    return out


def infer_body(inputs: Mapping[str, Any], outputs: list[str] | None) -> tuple[bytes, int]:
    """An OIP HTTP inference body with every tensor binary; returns it and its JSON length."""
    described, blobs = [], []
    for name, arr in _arrays(inputs):
        blob = to_raw(arr)
        described.append({"name": name, "datatype": datatype_of(arr.dtype),
                          "shape": list(arr.shape),
                          "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    doc: dict[str, Any] = {"inputs": described}
    if outputs:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
    else:
        doc["parameters"] = {"binary_data_output": True}
    header = json.dumps(doc).encode()
    return b"".join([header, *blobs]), len(header)


def infer_outputs(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """The output tensors of an OIP HTTP inference answer."""
    view = memoryview(body)
    length = len(view) if header_length is None else header_length
    try:
        doc = json.loads(bytes(view[:length]))
        offset, out = length, {}
        for entry in doc["outputs"]:
            size = (entry.get("parameters") or {}).get("binary_data_size")
            if size is None:
                out[entry["name"]] = from_json(entry["name"], entry["datatype"], entry["shape"],
                                               entry["data"])
            else:
                out[entry["name"]] = from_raw(entry["name"], entry["datatype"], entry["shape"],
                                              view[offset:offset + size])
                offset += size
        return out
    except (ValueError, KeyError, TypeError, TensorError) as exc:
        raise ServerError(500, f"the gateway sent a malformed inference answer: {exc}") from None


def infer_request(model: str, inputs: Mapping[str, Any],
                  outputs: list[str] | None) -> oip_pb.ModelInferRequest:
    """An OIP gRPC ModelInferRequest with every tensor in ``raw_input_contents``."""
    request = oip_pb.ModelInferRequest(model_name=model)
    for name, arr in _arrays(inputs):
        request.inputs.add(name=name, datatype=datatype_of(arr.dtype), shape=arr.shape)
        request.raw_input_contents.append(bytes(to_raw(arr)))
    for name in outputs or ():
        request.outputs.add(name=name)
    return request


def infer_response_outputs(response: oip_pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """The output tensors of a ModelInferResponse (raw or typed contents)."""
    raw = response.raw_output_contents
    out = {}
    try:
        for index, tensor in enumerate(response.outputs):
            shape = list(tensor.shape)
            if raw:
                out[tensor.name] = from_raw(tensor.name, tensor.datatype, shape, raw[index])
            else:
                dtype = numpy_dtype(tensor.datatype, tensor.name)
                out[tensor.name] = np.array(_typed_values(tensor), dtype=dtype).reshape(shape)
    except (IndexError, TensorError, ValueError) as exc:
        raise ServerError(500, f"the gateway sent a malformed inference answer: {exc}") from None
    return out


def _typed_values(tensor: Any) -> list:
    for field in ("bool_contents", "int_contents", "int64_contents", "uint_contents",
                  "uint64_contents", "fp32_contents", "fp64_contents", "bytes_contents"):
        values = getattr(tensor.contents, field)
        if len(values):
            return list(values)
    return []
