"""Open Inference Protocol requests go through the broker's batching stage like REST calls:
concurrent tritonclient calls over HTTP and gRPC share model calls, each caller gets its own
rows back, and the model configuration reports the limits that the broker applies."""
from __future__ import annotations

import concurrent.futures as cf
import json

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from cluster import Cluster

pytestmark = pytest.mark.integration

# batchy.tag sleeps 20 ms per call and writes the size of its batch into column 3 of each row;
# the code declares max_batch_size 32 and max_latency_ms 50
OVERRIDES = {"batchy.tag": {"max_batch_size": 16, "max_latency_ms": 40}}


@pytest.fixture(scope="module")
def oip(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(tmp_path_factory.mktemp("oip-batching"),
                      env={"ZEROSERVE_BATCHING_OVERRIDES": json.dumps(OVERRIDES)})
    try:
        cluster.broker()
        cluster.gateway()
        cluster.test_worker("Batchy", "--slots", "1")
        cluster.wait_ready(1)
        yield cluster
    finally:
        cluster.stop()


def _call(module, client, row: np.ndarray) -> np.ndarray:
    tensor = module.InferInput("x", list(row.shape), "FP32")
    tensor.set_data_from_numpy(row)
    return client.infer("batchy.tag", [tensor]).as_numpy("output")


def test_config_reports_the_batching_override(oip: Cluster) -> None:
    with triton_http.InferenceServerClient(f"127.0.0.1:{oip.http_port}") as client:
        config = client.get_model_config("batchy.tag")
    assert config["max_batch_size"] == 16
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 40_000
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{oip.grpc_port}") as client:
        config = client.get_model_config("batchy.tag", as_json=True)["config"]
    assert int(config["max_batch_size"]) == 16


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_concurrent_oip_calls_share_model_calls(oip: Cluster, protocol: str) -> None:
    module = triton_http if protocol == "http" else triton_grpc
    port = oip.http_port if protocol == "http" else oip.grpc_port
    rows = [np.full((1 + i % 2, 4), i, np.float32) for i in range(24)]
    clients = [module.InferenceServerClient(f"127.0.0.1:{port}") for _ in rows]
    try:
        with cf.ThreadPoolExecutor(len(rows)) as pool:
            answers = list(pool.map(lambda pair: _call(module, *pair), zip(clients, rows)))
    finally:
        for client in clients:
            client.close()
    for row, answer in zip(rows, answers):
        assert answer.shape == row.shape
        np.testing.assert_array_equal(answer[:, :3], row[:, :3])  # its own rows, nobody else's
    batch_sizes = [int(answer[0, 3]) for answer in answers]
    assert max(batch_sizes) > 1, f"no model call held more than one request: {batch_sizes}"
    assert max(batch_sizes) <= 16  # the override, not the code's 32
