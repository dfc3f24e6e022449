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
from cluster import ROOT, Cluster

pytestmark = pytest.mark.integration

SERVICE = f"{ROOT / 'tests' / 'oip_services.py'}:OipModels"
OVERRIDES = {"oip.double": {"max_batch_size": 32, "max_latency_ms": 40}}


@pytest.fixture(scope="module")
def oip(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(tmp_path_factory.mktemp("oip-batching"),
                      env={"ZEROSERVE_BATCHING_OVERRIDES": json.dumps(OVERRIDES)})
    try:
        cluster.broker()
        cluster.gateway()
        cluster.worker(SERVICE)
        cluster.wait_ready(1)
        yield cluster
    finally:
        cluster.stop()


def _call(module, client, row: np.ndarray) -> np.ndarray:
    tensor = module.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(row)
    return client.infer("oip.double", [tensor]).as_numpy("output")


def test_config_reports_the_batching_override(oip: Cluster) -> None:
    with triton_http.InferenceServerClient(f"127.0.0.1:{oip.http_port}") as client:
        config = client.get_model_config("oip.double")
    assert config["max_batch_size"] == 32
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 40_000
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{oip.grpc_port}") as client:
        config = client.get_model_config("oip.double", as_json=True)["config"]
    assert int(config["max_batch_size"]) == 32


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_concurrent_oip_calls_share_model_calls(oip: Cluster, protocol: str) -> None:
    module = triton_http if protocol == "http" else triton_grpc
    port = oip.http_port if protocol == "http" else oip.grpc_port
    before = oip.stats()["endpoints"].get("oip.double", {}).get("batch_sizes", {})
    rows = [np.full((1, 4), i, np.float32) for i in range(24)]
    clients = [module.InferenceServerClient(f"127.0.0.1:{port}") for _ in rows]
    try:
        with cf.ThreadPoolExecutor(len(rows)) as pool:
            answers = list(pool.map(lambda pair: _call(module, *pair), zip(clients, rows)))
    finally:
        for client in clients:
            client.close()
    for row, answer in zip(rows, answers):
        np.testing.assert_array_equal(answer, row * 2)
    after = oip.stats()["endpoints"]["oip.double"]["batch_sizes"]
    new = {int(size): n - before.get(size, 0) for size, n in after.items()
           if n > before.get(size, 0)}
    assert sum(size * n for size, n in new.items()) == len(rows)
    assert max(new) > 1, f"no model call held more than one row: {new}"
