"""OIP inference messages over gRPC <-> arrays (pure).

Inputs come either as ``raw_input_contents`` (one entry per input, in input
order: what tritonclient and perf_analyzer send) or as typed ``contents``
(what KServe-style clients send). Outputs go back the same way: raw in, raw
out (one ``raw_output_contents`` entry per output, in order); typed in, typed
out, except FP16 and BF16, which have no typed field and always travel raw.

An input whose parameters name a shared memory region has no raw entry (raw entries
belong to the other inputs, in order) and no contents; an output written to shared
memory carries only its parameters, and an empty raw entry that keeps the others'
entries at their outputs' positions.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gateway.grpc_messages import BytesAfter
from gateway.oip_rest_body import InferRequest, shm_parameters
from gateway.shm_regions import ShmSlice, slice_of
from zeroserve.grpc_gen import grpc_service_pb2 as pb
from zeroserve.wire.oip_tensors import (
    TensorError,
    check_shape,
    datatype_of,
    element_count,
    from_raw,
    numpy_dtype,
    object_array,
    shaped,
)
from zeroserve.wire.oip_tensors import to_raw as raw_bytes

# the typed field of each datatype (InferTensorContents)
_TYPED_FIELD = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "INT8": "int_contents",
    "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def parameter(param: pb.InferParameter) -> Any:
    """The value of an InferParameter, whichever of its five choices is set."""
    choice = param.WhichOneof("parameter_choice")
    return None if choice is None else getattr(param, choice)


def parse_request(request: pb.ModelInferRequest, raw_apart: Sequence[memoryview] | None = None
                  ) -> tuple[InferRequest, bool]:
    """The parsed request, and whether its inputs came typed (answer typed) or raw.
    ``raw_apart``: its ``raw_input_contents``, when they were kept out of the message
    (:class:`~gateway.grpc_messages.BytesApart`)."""
    raw = request.raw_input_contents if raw_apart is None else raw_apart
    if not request.inputs:
        raise TensorError("the request has no inputs")
    in_shm: dict[str, tuple[str, tuple[int, ...], ShmSlice]] = {}
    slices = [slice_of(_parameters(t.parameters), t.name) if t.parameters else None
              for t in request.inputs]
    with_data = sum(1 for where in slices if where is None)
    if raw and len(raw) != with_data:
        raise TensorError(f"{len(raw)} raw_input_contents for {with_data} inputs not in shared "
                          "memory; send one per such input, in input order, or none")
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    next_raw = 0
    for tensor, where in zip(request.inputs, slices):
        name, datatype = tensor.name, tensor.datatype
        if name in tensors or name in in_shm:
            raise TensorError(f"input '{name}' is given twice")
        shape = check_shape(name, list(tensor.shape))
        if where is not None:
            if tensor.HasField("contents"):
                raise TensorError(f"input '{name}' names a shared memory region and has "
                                  "contents too; give one or the other")
            numpy_dtype(datatype, name)
            in_shm[name] = (datatype, shape, where)
            continue
        if raw:
            arr = from_raw(name, datatype, shape, raw[next_raw])
            next_raw += 1
        else:
            arr = _from_typed(name, datatype, shape, tensor.contents)
        tensors[name] = (datatype, arr)
    timeout = parameter(request.parameters["timeout"]) if "timeout" in request.parameters \
        else None
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)
                                or timeout <= 0):
        raise TensorError(f"parameter 'timeout' must be a positive number of microseconds, "
                          f"got {timeout!r}")
    outputs: dict[str, bool | None] = {}
    out_shm: dict[str, ShmSlice] = {}
    for out in request.outputs:
        outputs[out.name] = None
        where = slice_of(_parameters(out.parameters), out.name) if out.parameters else None
        if where is not None:
            out_shm[out.name] = where
    # typed answers only when typed contents came (inputs all in shared memory: raw)
    typed = not raw and with_data > 0
    return InferRequest(id=request.id, inputs=tensors, outputs=outputs, timeout_us=timeout,
                        shm_inputs=in_shm, shm_outputs=out_shm), typed


def _parameters(params: Any) -> dict[str, Any]:
    """A protobuf map of InferParameter as plain values."""
    return {key: parameter(value) for key, value in params.items()}


def _from_typed(name: str, datatype: str, shape: tuple[int, ...],
                contents: pb.InferTensorContents) -> np.ndarray:
    dtype = numpy_dtype(datatype, name)
    field = _TYPED_FIELD.get(datatype)
    if field is None:
        raise TensorError(f"input '{name}': {datatype} has no typed contents; send it in "
                          "raw_input_contents")
    values = getattr(contents, field)
    count = element_count(shape)  # a Python int: numpy's product wraps ([2**32, 2**32] is 0)
    if len(values) != count:
        raise TensorError(f"input '{name}': shape {list(shape)} needs {count} elements, "
                          f"{field} has {len(values)}")
    if dtype.kind == "O":
        return object_array(name, list(values), shape)
    try:
        with np.errstate(over="raise", invalid="raise"):
            flat = np.array(values, dtype=dtype)
    except (OverflowError, FloatingPointError, ValueError, MemoryError) as exc:
        raise TensorError(f"input '{name}': {datatype} cannot hold its data ({exc})") from None
    out = shaped(name, flat, shape)
    if dtype.kind in "iu" and not np.array_equal(out.reshape(-1), np.asarray(values)):
        raise TensorError(f"input '{name}': data out of the range of {datatype}")
    return out


def build_response(model: str, version: str, request: InferRequest, typed: bool,
                   outputs: list[tuple[str, np.ndarray]]) -> pb.ModelInferResponse:
    """The ModelInferResponse for the produced ``outputs`` (already selected and ordered)."""
    response, raw = _response(model, version, request, typed, outputs)
    for entry in raw:
        response.raw_output_contents.append(bytes(entry))
    return response


def build_unary_response(model: str, version: str, request: InferRequest, typed: bool,
                         outputs: list[tuple[str, np.ndarray]]
                         ) -> pb.ModelInferResponse | BytesAfter:
    """:func:`build_response`'s answer, its ``raw_output_contents`` (when it has any) kept
    apart as views of the outputs' memory (:class:`~gateway.grpc_messages.BytesAfter`): the
    same bytes on the wire, for a unary ``ModelInfer`` (a stream's response nests it)."""
    response, raw = _response(model, version, request, typed, outputs)
    return BytesAfter(response, _RAW_OUTPUT_FIELD, raw) if raw else response


_RAW_OUTPUT_FIELD = pb.ModelInferResponse.RAW_OUTPUT_CONTENTS_FIELD_NUMBER


def _response(model: str, version: str, request: InferRequest, typed: bool,
              outputs: list[tuple[str, np.ndarray]]
              ) -> tuple[pb.ModelInferResponse, list[bytes | memoryview]]:
    """The response without its raw contents, and those contents (views where they can be)."""
    response = pb.ModelInferResponse(model_name=model, model_version=version, id=request.id)
    raw: list[bytes | memoryview] = []
    send_raw = not typed or any(datatype_of(arr.dtype) not in _TYPED_FIELD
                                for _, arr in outputs)
    for name, arr in outputs:
        datatype = datatype_of(arr.dtype)
        tensor = response.outputs.add(name=name, datatype=datatype, shape=arr.shape)
        if name in request.shm_written:
            for key, value in shm_parameters(request, name).items():
                if isinstance(value, str):
                    tensor.parameters[key].string_param = value
                else:
                    tensor.parameters[key].int64_param = value
            if send_raw:
                raw.append(b"")
        elif send_raw:
            raw.append(raw_bytes(arr))
        else:
            _fill_typed(tensor.contents, datatype, arr)
    return response, raw


def _fill_typed(contents: pb.InferTensorContents, datatype: str, arr: np.ndarray) -> None:
    values = getattr(contents, _TYPED_FIELD[datatype])
    flat = arr.reshape(-1).tolist()
    if datatype == "BYTES":
        flat = [v if isinstance(v, bytes) else str(v).encode() for v in flat]
    values.extend(flat)
