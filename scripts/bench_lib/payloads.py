"""Request and answer bodies, computed from the reference models the served examples wrap."""
from __future__ import annotations

import base64
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from bench_lib.oip_wire import (
    Tensor,
    WireError,
    decode_infer_response,
    encode_infer_request,
    encode_infer_response,
)
from bench_lib.profiles import Protocol

OIP_INPUT = "x"          # the endpoints' argument, as in the REST body
OIP_OUTPUT = "output"    # the name zeroserve gives an endpoint's single output
OIP_VERSION = "1"
HEADER_LENGTH = "Inference-Header-Content-Length"
_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
              np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32"}


@dataclass(frozen=True)
class Payload:
    """One model's request in one protocol, and the answer it should get.

    ``request`` is the body on the wire: JSON for ``REST_JSON``; a JSON header and the raw
    tensor for ``OIP_BINARY``; the serialized ``ModelInferRequest`` (unframed) for ``GRPC``,
    with ``grpc_json`` the same request as protobuf JSON (bytes in base64, for k6).
    ``headers`` go with it. ``answer`` is the body the server answers, byte for byte (the
    REST one is formatted as the gateway formats it, ``json.dumps`` of the nested list), so
    the echo baseline sends the same bytes the cluster does.
    """

    model: str
    request: bytes
    answer: bytes
    expected: np.ndarray
    protocol: Protocol = Protocol.REST_JSON
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    grpc_json: dict | None = field(default=None, compare=False)


def load_reference_models(path: Path) -> ModuleType:
    """Import ``examples/reference_models.py`` (a copy of shared/bench/models.py) by path."""
    spec = importlib.util.spec_from_file_location("reference_models", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load reference models from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _datatype(arr: np.ndarray) -> str:
    try:
        return _DATATYPES[arr.dtype]
    except KeyError:
        raise ValueError(f"no OIP datatype for {arr.dtype} in the benchmark") from None


def build_payload(models: ModuleType, model: str, protocol: Protocol = Protocol.REST_JSON,
                  oip_model: str | None = None) -> Payload:
    """The single-row request (``sample_input(1)``) for ``model`` in ``protocol``, and its
    answer. ``oip_model`` names the OIP model (default ``model``: the service's default
    endpoint)."""
    oip_name = oip_model or model
    x = models.sample_input(1)
    y = getattr(models, model)(x)
    if protocol is Protocol.REST_JSON:
        return Payload(model, json.dumps({OIP_INPUT: x.tolist()}).encode(),
                       json.dumps(y.tolist()).encode(), y)
    x_raw, y_raw = x.astype(x.dtype.newbyteorder("<")).tobytes(), \
        y.astype(y.dtype.newbyteorder("<")).tobytes()
    if protocol is Protocol.OIP_BINARY:
        header = json.dumps({
            "inputs": [{"name": OIP_INPUT, "shape": list(x.shape), "datatype": _datatype(x),
                        "parameters": {"binary_data_size": len(x_raw)}}],
            "outputs": [{"name": OIP_OUTPUT, "parameters": {"binary_data": True}}],
        }).encode()
        answer_header = json.dumps({
            "model_name": oip_name, "model_version": OIP_VERSION, "id": "",
            "outputs": [{"name": OIP_OUTPUT, "datatype": _datatype(y), "shape": list(y.shape),
                         "parameters": {"binary_data_size": len(y_raw)}}],
        }).encode()
        return Payload(model, header + x_raw, answer_header + y_raw, y, protocol,
                       headers=(("Content-Type", "application/octet-stream"),
                                (HEADER_LENGTH, str(len(header)))))
    tensor = Tensor(OIP_INPUT, _datatype(x), tuple(x.shape), x_raw)
    request = encode_infer_request(oip_name, [tensor], [OIP_OUTPUT])
    answer = encode_infer_response(oip_name, OIP_VERSION, [
        Tensor(OIP_OUTPUT, _datatype(y), tuple(y.shape), y_raw)])
    grpc_json = {
        "model_name": oip_name,
        "inputs": [{"name": OIP_INPUT, "datatype": tensor.datatype, "shape": list(x.shape)}],
        "outputs": [{"name": OIP_OUTPUT}],
        "raw_input_contents": [base64.b64encode(x_raw).decode()],
    }
    return Payload(model, request, answer, y, protocol,
                   headers=(("Content-Type", "application/grpc"),), grpc_json=grpc_json)


def answer_array(payload: Payload, body: bytes) -> np.ndarray:
    """The output array in ``body``, an answer in ``payload``'s protocol.
    Raises ValueError when ``body`` is not such an answer."""
    if payload.protocol is Protocol.REST_JSON:
        return np.asarray(json.loads(body), dtype=np.float32)
    if payload.protocol is Protocol.OIP_BINARY:
        text = body.decode("latin-1")  # one char per byte: the header's end is a byte offset
        header, end = json.JSONDecoder().raw_decode(text)
        (output,) = [o for o in header["outputs"] if o["name"] == OIP_OUTPUT]
        raw = body[end:end + output["parameters"]["binary_data_size"]]
        return np.frombuffer(raw, "<f4").reshape(output["shape"])
    try:
        response = decode_infer_response(body)
    except WireError as exc:
        raise ValueError(str(exc)) from None
    (output,) = [o for o in response.outputs if o.name == OIP_OUTPUT]
    return np.frombuffer(output.raw, "<f4").reshape(output.shape)


def answer_matches(payload: Payload, body: bytes) -> bool:
    """Whether ``body`` (an answer in ``payload``'s protocol) holds the expected output
    within float32 rounding."""
    try:
        got = answer_array(payload, body)
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
    return got.shape == payload.expected.shape and bool(
        np.allclose(got, payload.expected, rtol=1e-4, atol=1e-5))
