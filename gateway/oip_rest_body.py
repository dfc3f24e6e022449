"""OIP inference bodies over HTTP: JSON, and Triton's binary tensor extension (pure).

A request body is a JSON header optionally followed by raw tensor blobs: the
``Inference-Header-Content-Length`` header gives the JSON part's length, and
every input with ``parameters.binary_data_size`` takes its blob, in input
order. A response puts outputs asked for as binary (per output
``binary_data``, else the request's ``binary_data_output``) after its JSON the
same way; JSON outputs carry a flat ``data`` list and no ``parameters``.
BF16 never goes in JSON: a BF16 input with ``data`` is refused, and a BF16 output
is sent binary even when JSON is asked for (tritonclient reads either).

An input or requested output may name a system shared memory slice instead
(:func:`gateway.shm_regions.slice_of`): the input is read from it
(:func:`read_shm_inputs`, once its caller is known) and the output written to it
(:func:`write_shm_outputs`); such an output has neither data nor parameters in the answer
(over gRPC it names its region, :func:`shm_parameters`), as with Triton.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.json_body import DEFAULT_MAX_DEPTH, JsonBodyError, dump_json, parse_json
from gateway.shm_regions import (
    OFFSET_PARAM,
    REGION_PARAM,
    SIZE_PARAM,
    CallerRegions,
    RegionError,
    ShmSlice,
    slice_of,
)
from zeroserve.wire.oip_tensors import (
    RAW_ONLY,
    TensorError,
    check_shape,
    datatype_of,
    from_json,
    from_raw,
    numpy_dtype,
    to_json,
    to_raw,
)

_UNSUPPORTED_OUTPUT_PARAMS = ("classification",)


@dataclass
class InferRequest:
    """A parsed inference request: its id, inputs ``{name: (datatype, array)}``, the outputs
    asked for (``{name: binary or None}``, empty for all), and the binary default.

    ``shm_inputs`` are the inputs still to read from shared memory (``{name: (datatype,
    shape, slice)}``), ``shm_outputs`` the outputs to write there (also in ``outputs``), and
    ``shm_written`` the bytes written of each, once written."""

    id: str
    inputs: dict[str, tuple[str, np.ndarray]]
    outputs: dict[str, bool | None] = field(default_factory=dict)
    binary_output: bool = False
    timeout_us: int | None = None
    shm_inputs: dict[str, tuple[str, tuple[int, ...], ShmSlice]] = field(default_factory=dict)
    shm_outputs: dict[str, ShmSlice] = field(default_factory=dict)
    shm_written: dict[str, int] = field(default_factory=dict)


def _object(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TensorError(f"{what} must be an object")
    return value


def parse_request(body: bytes | memoryview, header_length: int | None,
                  max_json_depth: int = DEFAULT_MAX_DEPTH) -> InferRequest:
    """Parse an inference request body (its JSON part by :func:`gateway.json_body.parse_json`);
    :class:`TensorError` says what is wrong."""
    view = memoryview(body)
    if header_length is None:
        header_length = len(view)
    if not 0 <= header_length <= len(view):
        raise TensorError(f"Inference-Header-Content-Length {header_length} is outside the "
                          f"body of {len(view)} bytes")
    try:
        doc = parse_json(bytes(view[:header_length]), max_json_depth)
    except JsonBodyError as exc:
        raise TensorError(f"the request's JSON is not valid: {exc}") from None
    if not isinstance(doc, dict):
        raise TensorError("the request must be a JSON object")
    params = _object(doc.get("parameters"), "parameters")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise TensorError("the request must have a non-empty 'inputs' list")
    offset = header_length
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    in_shm: dict[str, tuple[str, tuple[int, ...], ShmSlice]] = {}
    for entry in inputs:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise TensorError("each input must be an object with a 'name'")
        name, datatype, shape = entry["name"], entry.get("datatype"), entry.get("shape")
        if not isinstance(datatype, str):
            raise TensorError(f"input '{name}' needs a 'datatype' string")
        if name in tensors or name in in_shm:
            raise TensorError(f"input '{name}' is given twice")
        input_params = _object(entry.get("parameters"), f"input '{name}' parameters")
        size = input_params.get("binary_data_size")
        where = slice_of(input_params, name)
        if where is not None:
            if size is not None or "data" in entry:
                raise TensorError(f"input '{name}' names a shared memory region and has data "
                                  "too; give one or the other")
            numpy_dtype(datatype, name)
            in_shm[name] = (datatype, check_shape(name, shape), where)
            continue
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(view):
                raise TensorError(f"input '{name}': binary_data_size {size!r} runs past the "
                                  f"{len(view) - header_length} bytes of binary data")
            arr = from_raw(name, datatype, shape, view[offset:offset + size])
            offset += size
        elif "data" in entry:
            arr = from_json(name, datatype, shape, entry["data"])
        else:
            raise TensorError(f"input '{name}' has neither 'data' nor binary_data_size")
        tensors[name] = (datatype, arr)
    if offset != len(view):
        raise TensorError(f"{len(view) - offset} bytes of binary data are not claimed by any "
                          "input's binary_data_size")
    request_id = doc.get("id", "")
    outputs, out_shm = _requested_outputs(doc.get("outputs"))
    return InferRequest(
        id=request_id if isinstance(request_id, str) else str(request_id), inputs=tensors,
        outputs=outputs, binary_output=bool(params.get("binary_data_output", False)),
        timeout_us=_timeout(params.get("timeout")), shm_inputs=in_shm, shm_outputs=out_shm)


def _timeout(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise TensorError(f"parameter 'timeout' must be a positive number of microseconds, "
                          f"got {value!r}")
    return value


def _requested_outputs(outputs: Any) -> tuple[dict[str, bool | None], dict[str, ShmSlice]]:
    """The outputs asked for, and those of them to write to shared memory."""
    if outputs is None:
        return {}, {}
    if not isinstance(outputs, list):
        raise TensorError("'outputs' must be a list")
    wanted: dict[str, bool | None] = {}
    in_shm: dict[str, ShmSlice] = {}
    for entry in outputs:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise TensorError("each requested output must be an object with a 'name'")
        params = _object(entry.get("parameters"), f"output '{entry['name']}' parameters")
        for key in _UNSUPPORTED_OUTPUT_PARAMS:
            if key in params:
                raise TensorError(f"output parameter '{key}' is not supported")
        binary = params.get("binary_data")
        wanted[entry["name"]] = None if binary is None else bool(binary)
        where = slice_of(params, entry["name"])
        if where is not None:
            in_shm[entry["name"]] = where
    return wanted, in_shm


def read_shm_inputs(request: InferRequest, regions: CallerRegions | None) -> None:
    """Read ``request``'s shared memory inputs into its ``inputs`` (from the caller's regions;
    None: the gateway has no shared memory, and naming a region is refused)."""
    if not request.shm_inputs and not request.shm_outputs:
        return
    if regions is None:
        raise RegionError("system shared memory is off on this gateway "
                          "(gateway.shm_key_prefix is empty)")
    for name, (datatype, shape, where) in request.shm_inputs.items():
        request.inputs[name] = (datatype, from_raw(name, datatype, shape,
                                                   regions.read(where, name)))
    request.shm_inputs = {}


def write_shm_outputs(request: InferRequest, outputs: list[tuple[str, np.ndarray]],
                      regions: CallerRegions | None) -> None:
    """Write the outputs that ``request`` asked for in shared memory, recording each one's
    size in ``request.shm_written``."""
    for name, arr in outputs:
        where = request.shm_outputs.get(name)
        if where is None:
            continue
        if regions is None:
            raise RegionError("system shared memory is off on this gateway")
        request.shm_written[name] = regions.write(where, name, to_raw(arr))


def shm_parameters(request: InferRequest, name: str) -> dict[str, Any]:
    """The parameters that an output written to shared memory carries in the answer: its
    region, the bytes written and, when not 0, the offset."""
    where = request.shm_outputs[name]
    params: dict[str, Any] = {REGION_PARAM: where.region,
                              SIZE_PARAM: request.shm_written[name]}
    if where.offset:
        params[OFFSET_PARAM] = where.offset
    return params


def select_outputs(produced: list[tuple[str, np.ndarray]], wanted: dict[str, bool | None],
                   model: str = "") -> list[tuple[str, np.ndarray]]:
    """The outputs asked for, in the order asked (all of them when none is named); an
    unknown one is refused with Triton's words (for ``model``)."""
    if not wanted:
        return produced
    by_name = dict(produced)
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise TensorError(f"unexpected inference output '{missing[0]}' for model '{model}': "
                          f"unknown output {missing[0]!r}; the model returned "
                          f"{sorted(by_name)}")
    return [(name, by_name[name]) for name in wanted]


def encode_response(model: str, version: str, request: InferRequest,
                    outputs: list[tuple[str, np.ndarray]]) -> tuple[bytes, list]:
    """The response's JSON bytes and the binary blobs that follow it (possibly none).

    An output goes binary when asked (per output, else the request's default) and always
    when its datatype cannot travel in JSON (BF16)."""
    described, blobs = [], []
    for name, arr in outputs:
        datatype = datatype_of(arr.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if name in request.shm_written:  # no parameters, as Triton answers over HTTP: its C++
            described.append(entry)        # client (perf_analyzer) reads any as binary data
            continue
        binary = request.outputs.get(name)
        if binary is None:
            binary = request.binary_output
        if binary or datatype in RAW_ONLY:
            blob = to_raw(arr)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = to_json(arr)
        described.append(entry)
    doc = {"model_name": model, "model_version": version, "id": request.id,
           "outputs": described}
    try:
        header = dump_json(doc)
    except JsonBodyError as exc:
        raise TensorError(str(exc)) from None
    return header, blobs
