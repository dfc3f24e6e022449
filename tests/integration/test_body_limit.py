"""Bodies over gateway.max_body_bytes get a JSON 413, also when they inflate past it."""
from __future__ import annotations

import gzip
import http.client
import json
import zlib

import pytest
from cluster import Cluster

pytestmark = pytest.mark.integration

LIMIT = 4096


def _post(cluster: Cluster, path: str, body: bytes, headers: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_oversize_bodies_get_413_and_the_gateway_keeps_serving(cluster: Cluster) -> None:
    cluster.broker()
    cluster.gateway(env={"ZEROSERVE_GATEWAY_MAX_BODY_BYTES": str(LIMIT)})
    cluster.worker()
    cluster.wait_ready(1)
    row = {"x": [[0.5] * 64]}
    inflating = json.dumps({"x": [[0.5] * 64] * 100}).encode()  # ~27 KB once inflated
    cases = [
        ("/mlp/predict", json.dumps({"x": [[0.5] * 64] * 20}).encode(),
         {"Content-Type": "application/json"}),
        ("/mlp/predict", gzip.compress(inflating),
         {"Content-Type": "application/json", "Content-Encoding": "gzip"}),
        ("/v2/models/mlp/infer", zlib.compress(inflating), {"Content-Encoding": "deflate"}),
    ]
    for path, body, headers in cases:
        assert len(body) < 64 * 1024  # small enough for the client to send before reading
        status, answer = _post(cluster, path, body, headers)
        assert status == 413, (path, headers, answer)
        assert f"limit of {LIMIT} bytes" in answer["error"]
    status, answer = _post(cluster, "/mlp/predict", json.dumps(row).encode(),
                           {"Content-Type": "application/json"})
    assert status == 200 and len(answer[0]) == 10


def test_oversize_grpc_request_is_resource_exhausted_and_the_gateway_keeps_serving(
        cluster: Cluster) -> None:
    import numpy as np
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    cluster.broker()
    cluster.gateway(env={"ZEROSERVE_GATEWAY_MAX_BODY_BYTES": str(LIMIT)})
    cluster.worker()
    cluster.wait_ready(1)

    def infer(rows: int) -> np.ndarray:
        x = triton.InferInput("x", [rows, 64], "FP32")
        x.set_data_from_numpy(np.full((rows, 64), 0.5, np.float32))
        return client.infer("mlp", [x]).as_numpy("output")

    with triton.InferenceServerClient(f"127.0.0.1:{cluster.grpc_port}") as client:
        with pytest.raises(InferenceServerException) as refused:
            infer(20)  # 5,120 bytes of tensor alone
        assert "RESOURCE_EXHAUSTED" in str(refused.value.status())
        assert infer(1).shape == (1, 10)
