"""OIP HTTP bodies: JSON with binary blobs in, JSON or binary out."""
from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from gateway.oip_rest_body import InferRequest, encode_response, parse_request, select_outputs
from zeroserve.wire.oip_tensors import TensorError


def _body(header: dict, *blobs: bytes) -> tuple[bytes, int]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), len(text)


def test_binary_and_json_inputs_mix_in_order() -> None:
    a, b = np.arange(3, dtype=np.float32), np.array([1, 2], dtype=np.int64)
    body, length = _body({
        "id": "r1", "parameters": {"binary_data_output": True, "timeout": 5000},
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [3],
             "parameters": {"binary_data_size": 12}},
            {"name": "j", "datatype": "INT32", "shape": [1, 2], "data": [[7, 8]]},
            {"name": "b", "datatype": "INT64", "shape": [2],
             "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
    }, a.tobytes(), b.tobytes())
    request = parse_request(body, length)
    assert request.id == "r1" and request.timeout_us == 5000 and request.binary_output
    assert list(request.inputs) == ["a", "j", "b"]
    np.testing.assert_array_equal(request.inputs["a"][1], a)
    np.testing.assert_array_equal(request.inputs["b"][1], b)
    assert request.inputs["j"][1].tolist() == [[7, 8]]
    assert request.outputs == {"y": False, "z": None}


def test_without_the_header_length_the_body_is_json() -> None:
    body, _ = _body({"inputs": [{"name": "x", "datatype": "BOOL", "shape": [1],
                                 "data": [True]}]})
    assert parse_request(body, None).inputs["x"][1].tolist() == [True]


@pytest.mark.parametrize("header, blobs, message", [
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
     [b"junk"], "not claimed"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}, [], "neither 'data'"),
    ({"inputs": [{"name": "x", "shape": [1], "data": [1.0]}]}, [], "'datatype' string"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]},
                 {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}, [],
     "given twice"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}],
      "outputs": [{"name": "y", "parameters": {"classification": 2}}]}, [],
     "'classification' is not supported"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}],
      "parameters": {"timeout": -1}}, [], "positive number of microseconds"),
    ([], [], "JSON object"),
])
def test_malformed_requests(header: object, blobs: list, message: str) -> None:
    text = json.dumps(header).encode()
    with pytest.raises(TensorError, match=message):
        parse_request(text + b"".join(blobs), len(text))


def test_response_puts_binary_outputs_after_the_json() -> None:
    request = InferRequest(id="7", inputs={}, outputs={"a": True, "b": None},
                           binary_output=False)
    a, b = np.array([1.5, 2.5], dtype=np.float32), np.array([[1, 2]], dtype=np.int8)
    header, blobs = encode_response("m", "1", request, [("a", a), ("b", b)])
    doc = json.loads(header)
    assert doc["id"] == "7" and doc["model_name"] == "m" and doc["model_version"] == "1"
    assert doc["outputs"][0] == {"name": "a", "datatype": "FP32", "shape": [2],
                                 "parameters": {"binary_data_size": 8}}
    assert doc["outputs"][1] == {"name": "b", "datatype": "INT8", "shape": [1, 2],
                                 "data": [1, 2]}  # JSON outputs carry no parameters
    assert b"".join(bytes(blob) for blob in blobs) == a.tobytes()


def test_nan_in_json_asks_for_binary() -> None:
    request = InferRequest(id="", inputs={})
    with pytest.raises(TensorError, match="binary_data"):
        encode_response("m", "1", request, [("a", np.array([np.nan]))])
    request.binary_output = True
    assert encode_response("m", "1", request, [("a", np.array([np.nan]))])[1]


def test_select_outputs() -> None:
    produced = [("a", np.zeros(1)), ("b", np.ones(1))]
    assert select_outputs(produced, {}) == produced
    assert [name for name, _ in select_outputs(produced, {"b": None, "a": True})] == ["b", "a"]
    with pytest.raises(TensorError, match="unknown output 'c'"):
        select_outputs(produced, {"c": None})


def test_bf16_binary_input_and_json_input_refused() -> None:
    bits = np.array([0x3FC0, 0x7FC1], dtype="<u2")
    body, length = _body({"inputs": [{"name": "h", "datatype": "BF16", "shape": [2],
                                      "parameters": {"binary_data_size": 4}}]},
                         bits.tobytes())
    arr = parse_request(body, length).inputs["h"][1]
    assert arr.dtype == ml_dtypes.bfloat16 and arr.view("<u2").tolist() == bits.tolist()
    text = json.dumps({"inputs": [{"name": "h", "datatype": "BF16", "shape": [1],
                                   "data": [1.5]}]}).encode()
    with pytest.raises(TensorError, match="tensor 'h': BF16 cannot travel in JSON 'data'; "
                                          "send it as binary"):
        parse_request(text, None)


def test_bf16_output_asked_as_json_goes_binary() -> None:
    request = InferRequest(id="", inputs={}, outputs={"h": False, "f": False})
    h = np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)
    header, blobs = encode_response("m", "1", request, [("h", h), ("f", np.ones(1))])
    doc = json.loads(header)
    assert doc["outputs"][0] == {"name": "h", "datatype": "BF16", "shape": [2],
                                 "parameters": {"binary_data_size": 4}}
    assert doc["outputs"][1]["data"] == [1.0]  # the others still go as asked
    assert [bytes(b) for b in blobs] == [h.tobytes()]


@pytest.mark.parametrize("entry", [
    {"name": "x", "datatype": "FP32", "shape": [0, 2**70],
     "parameters": {"binary_data_size": 0}},
    {"name": "x", "datatype": "BYTES", "shape": [0, 2**70],
     "parameters": {"binary_data_size": 0}},
    {"name": "x", "datatype": "FP32", "shape": [2**32, 2**32], "data": []},
    {"name": "x", "datatype": "BYTES", "shape": [0, 2**40, 2**40], "data": []},
])
def test_shapes_numpy_cannot_hold_are_tensor_errors(entry: dict) -> None:
    text = json.dumps({"inputs": [entry]}).encode()
    with pytest.raises(TensorError, match="tensor 'x': shape .* is too large"):
        parse_request(text, len(text))
