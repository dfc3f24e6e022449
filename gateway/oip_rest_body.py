"""OIP inference bodies over HTTP: JSON, and Triton's binary tensor extension (pure).

A request body is a JSON header optionally followed by raw tensor blobs: the
``Inference-Header-Content-Length`` header gives the JSON part's length, and
every input with ``parameters.binary_data_size`` takes its blob, in input
order. A response puts outputs asked for as binary (per output
``binary_data``, else the request's ``binary_data_output``) after its JSON the
same way; JSON outputs carry a flat ``data`` list and no ``parameters``.
BF16 never goes in JSON: a BF16 input with ``data`` is refused, and a BF16 output
is sent binary even when JSON is asked for (tritonclient reads either).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.json_body import DEFAULT_MAX_DEPTH, JsonBodyError, dump_json, parse_json
from zeroserve.wire.oip_tensors import (
    RAW_ONLY,
    TensorError,
    datatype_of,
    from_json,
    from_raw,
    to_json,
    to_raw,
)

_UNSUPPORTED_OUTPUT_PARAMS = ("classification", "shared_memory_region",
                              "shared_memory_byte_size", "shared_memory_offset")


@dataclass
class InferRequest:
    """A parsed inference request: its id, inputs ``{name: (datatype, array)}``, the outputs
    asked for (``{name: binary or None}``, empty for all), and the binary default."""

    id: str
    inputs: dict[str, tuple[str, np.ndarray]]
    outputs: dict[str, bool | None] = field(default_factory=dict)
    binary_output: bool = False
    timeout_us: int | None = None


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
    for entry in inputs:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise TensorError("each input must be an object with a 'name'")
        name, datatype, shape = entry["name"], entry.get("datatype"), entry.get("shape")
        if not isinstance(datatype, str):
            raise TensorError(f"input '{name}' needs a 'datatype' string")
        if name in tensors:
            raise TensorError(f"input '{name}' is given twice")
        size = _object(entry.get("parameters"), f"input '{name}' parameters").get(
            "binary_data_size")
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
    return InferRequest(
        id=request_id if isinstance(request_id, str) else str(request_id), inputs=tensors,
        outputs=_requested_outputs(doc.get("outputs")),
        binary_output=bool(params.get("binary_data_output", False)),
        timeout_us=_timeout(params.get("timeout")))


def _timeout(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise TensorError(f"parameter 'timeout' must be a positive number of microseconds, "
                          f"got {value!r}")
    return value


def _requested_outputs(outputs: Any) -> dict[str, bool | None]:
    if outputs is None:
        return {}
    if not isinstance(outputs, list):
        raise TensorError("'outputs' must be a list")
    wanted: dict[str, bool | None] = {}
    for entry in outputs:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise TensorError("each requested output must be an object with a 'name'")
        params = _object(entry.get("parameters"), f"output '{entry['name']}' parameters")
        for key in _UNSUPPORTED_OUTPUT_PARAMS:
            if key in params:
                raise TensorError(f"output parameter '{key}' is not supported")
        binary = params.get("binary_data")
        wanted[entry["name"]] = None if binary is None else bool(binary)
    return wanted


def select_outputs(produced: list[tuple[str, np.ndarray]], wanted: dict[str, bool | None]
                   ) -> list[tuple[str, np.ndarray]]:
    """The outputs asked for, in the order asked (all of them when none is named)."""
    if not wanted:
        return produced
    by_name = dict(produced)
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise TensorError(f"unknown output {missing[0]!r}; the model returned "
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
