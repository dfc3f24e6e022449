"""JSON bodies that a parser or a model should never see: nested 100,000 deep, or holding
NaN/Infinity. Each is a 400 from the gateway on every JSON route, before anything runs; NaN
travels in msgpack and OIP binary tensors both ways; a non-finite answer asked for as JSON is
an error naming the output."""
from __future__ import annotations

import http.client
import json
import math

import numpy as np
import pytest
import tritonclient.http as triton
from cluster import Cluster
from tritonclient.utils import InferenceServerException

import zeroserve

pytestmark = pytest.mark.integration

DEEP = b"[" * 100_000 + b"]" * 100_000


def _post(cluster: Cluster, path: str, body: bytes,
          headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=20)
    try:
        conn.request("POST", path, body=body,
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _runs(cluster: Cluster) -> int:
    status, runs, _ = cluster.post("/ratios/runs_so_far", {})
    assert status == 200
    return runs


@pytest.fixture
def ratios(cluster: Cluster) -> Cluster:
    cluster.broker()
    cluster.gateway()
    cluster.test_worker("Ratios")
    cluster.wait_ready(1)
    return cluster


def _oip_json(data: bytes) -> bytes:
    return (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": '
            + data + b"}]}")


def test_json_nested_100000_deep_is_400_on_every_json_route(ratios: Cluster) -> None:
    bodies = {
        "/ratios/reciprocal": b'{"x": ' + DEEP + b"}",
        "/v1/jobs": b'{"service": "ratios", "endpoint": "reciprocal", "inputs": {"x": '
                    + DEEP + b"}}",
        "/v2/models/ratios/infer": _oip_json(DEEP),
        "/v2/repository/index": DEEP,
    }
    for path, body in bodies.items():
        status, answer = _post(ratios, path, body)
        assert status == 400, (path, answer)
        assert "body is nested too deeply" in answer["error"], path
    # 64 levels are still JSON the gateway reads: the schema, not the parser, refuses them
    status, answer = _post(ratios, "/ratios/reciprocal",
                           b'{"x": ' + b"[" * 63 + b"]" * 63 + b"}")
    assert status == 400 and "nested too deeply" not in answer["error"]
    assert ratios.post("/ratios/reciprocal", {"x": [[1, 2, 4, 8]]})[:2] == \
        (200, [[1, 0.5, 0.25, 0.125]])
    assert _runs(ratios) == 1
    log = ratios.daemons[1].log()
    assert "RecursionError" not in log and "Traceback" not in log


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_json_input_is_400_before_the_model_runs(ratios: Cluster,
                                                            token: bytes) -> None:
    row = b"[[1, " + token + b", 2, 3]]"
    cases = {
        "/ratios/reciprocal": (b'{"x": ' + row + b"}", "x[0][1]"),
        "/v1/jobs": (b'{"service": "ratios", "endpoint": "reciprocal", "inputs": {"x": '
                     + row + b"}}", "inputs.x[0][1]"),
        "/v2/models/ratios/infer": (_oip_json(b"[1, " + token + b", 2, 3]"),
                                    "inputs[0: 'x'].data[1]"),
    }
    for path, (body, place) in cases.items():
        status, answer = _post(ratios, path, body)
        assert status == 400, (path, answer)
        error = answer["error"]
        assert f"{place} is {token.decode()}" in error, (path, error)
        assert "msgpack" in error and "binary tensors" in error, (path, error)
    assert _runs(ratios) == 0  # nothing reached the model


def test_non_finite_values_travel_in_msgpack_and_binary_tensors_both_ways(
        ratios: Cluster) -> None:
    x = np.array([[math.nan, 0.0, -0.0, 2.0]], np.float32)
    want = np.array([[math.nan, math.inf, -math.inf, 0.5]], np.float32)
    with zeroserve.Client(ratios.url) as client:  # REST in application/msgpack
        np.testing.assert_array_equal(client.call("ratios", "reciprocal", x=x), want)
    http = triton.InferenceServerClient(f"127.0.0.1:{ratios.http_port}")
    try:
        given = triton.InferInput("x", [1, 4], "FP32")
        given.set_data_from_numpy(x, binary_data=True)
        binary = triton.InferRequestedOutput("output", binary_data=True)
        got = http.infer("ratios", [given], outputs=[binary]).as_numpy("output")
        np.testing.assert_array_equal(got, want)
        as_json = triton.InferRequestedOutput("output", binary_data=False)
        with pytest.raises(InferenceServerException) as refused:
            http.infer("ratios", [given], outputs=[as_json])
        assert refused.value.status() == "400"
        assert "outputs[0: 'output'].data[0]" in refused.value.message()
        assert "binary_data: true" in refused.value.message()
    finally:
        http.close()
    # a JSON request whose answer is not finite: the error names the endpoint's output
    status, answer, _ = ratios.post("/ratios/reciprocal", {"x": [[1, 0, 2, 4]]})
    assert status == 400
    assert "the answer of ratios.reciprocal holds NaN or infinity at [0][1]" in answer["error"]
    assert "application/msgpack" in answer["error"]
    assert _runs(ratios) == 4
