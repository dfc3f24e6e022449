"""Triton's statistics extension through tritonclient (HTTP, gRPC and their aio clients):
counts grow by exactly the calls made, batch statistics for a batching model, and every gateway
of a cluster answers the broker's figures."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from cluster import ROOT, Cluster, free_port
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

SERVICE = f"{ROOT / 'tests' / 'triton_services.py'}:TritonModels"
CALLS = 5


@pytest.fixture(scope="module")
def tri(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(tmp_path_factory.mktemp("triton-stats"))
    try:
        yield cluster.start(SERVICE)
    finally:
        cluster.stop()


def _inputs(module, rows: int = 1) -> list:
    a = np.arange(16 * rows, dtype=np.int32).reshape(rows, 16)
    tensors = [module.InferInput("INPUT0", [rows, 16], "INT32"),
               module.InferInput("INPUT1", [rows, 16], "INT32")]
    for tensor in tensors:
        tensor.set_data_from_numpy(a)
    return tensors


def _as_dict(module, stats) -> dict:
    """A model_stats entry (HTTP JSON, or the gRPC message with its uint64 as ints)."""
    if module is httpclient or module is httpaio:
        return stats
    from google.protobuf.json_format import MessageToDict

    def ints(value):  # protobuf's JSON writes uint64 as strings
        if isinstance(value, dict):
            return {k: v if k in ("name", "version") else ints(v) for k, v in value.items()}
        if isinstance(value, list):
            return [ints(v) for v in value]
        return int(value) if isinstance(value, str) and value.isdigit() else value

    entry = ints(MessageToDict(stats, preserving_proto_field_name=True,
                               always_print_fields_with_no_presence=True))
    for unserved in ("memory_usage", "response_stats"):  # tritonclient's proto has them
        entry.pop(unserved, None)
    return entry


def _one(module, client, model: str) -> dict:
    answer = client.get_inference_statistics(model)
    entries = answer["model_stats"] if module is httpclient else answer.model_stats
    (entry,) = entries
    return _as_dict(module, entry)


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_statistics_grow_by_exactly_the_calls_made(tri: Cluster, module) -> None:
    port = tri.http_port if module is httpclient else tri.grpc_port
    with module.InferenceServerClient(f"127.0.0.1:{port}") as client:
        assert "statistics" in (client.get_server_metadata()["extensions"]
                                if module is httpclient
                                else client.get_server_metadata().extensions)
        before = _one(module, client, "tri.single")
        started_ms = time.time() * 1000
        for _ in range(CALLS):
            client.infer("tri.single", _inputs(module)[:1])
        after = _one(module, client, "tri.single")
    assert (after["name"], after["version"]) == ("tri.single", "1")
    for key in ("inference_count", "execution_count"):
        assert after[key] - before[key] == CALLS, key
    grown = {name: after["inference_stats"][name]["count"]
             - before["inference_stats"][name]["count"] for name in after["inference_stats"]}
    assert grown == {"success": CALLS, "fail": 0, "queue": CALLS, "compute_input": CALLS,
                     "compute_infer": CALLS, "compute_output": CALLS, "cache_hit": 0,
                     "cache_miss": 0}
    assert after["inference_stats"]["success"]["ns"] > before["inference_stats"]["success"]["ns"]
    assert after["last_inference"] >= started_ms - 1000  # ms since the epoch, not 0


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_a_batching_model_counts_rows_and_batches_per_size(tri: Cluster, module) -> None:
    port = tri.http_port if module is httpclient else tri.grpc_port
    with module.InferenceServerClient(f"127.0.0.1:{port}") as client:
        before = _one(module, client, "tri")
        client.infer("tri", _inputs(module, 3))
        client.infer("tri", _inputs(module, 2))
        after = _one(module, client, "tri")
        failed = _one(module, client, "tri.wrong_dtype")
        with pytest.raises(InferenceServerException):
            client.infer("tri.wrong_dtype", _inputs(module))
        failed_after = _one(module, client, "tri.wrong_dtype")
    assert after["inference_count"] - before["inference_count"] == 5  # rows, not requests
    assert 1 <= after["execution_count"] - before["execution_count"] <= 2
    assert after["inference_stats"]["success"]["count"] \
        - before["inference_stats"]["success"]["count"] == 2
    sizes = {b["batch_size"]: b for b in after["batch_stats"]}
    assert set(sizes) & {2, 3, 5}
    assert all(b["compute_infer"]["count"] > 0 and b["compute_infer"]["ns"] > 0
               for b in after["batch_stats"])
    assert failed_after["inference_stats"]["fail"]["count"] \
        - failed["inference_stats"]["fail"]["count"] == 1
    assert failed_after["inference_count"] == failed["inference_count"]


def test_every_model_and_an_unknown_one(tri: Cluster) -> None:
    status, every = tri.get("/v2/models/stats")
    assert status == 200
    assert {e["name"] for e in every["model_stats"]} >= {"tri", "tri.add_sub", "tri.single"}
    assert tri.get("/v2/models/tri/versions/1/stats")[1]["model_stats"][0]["name"] == "tri"
    assert tri.get("/v2/models/ghost/stats") == (
        404, {"error": "Request for unknown model: 'ghost' is not found"})
    assert tri.get("/v2/models/tri/versions/4/stats") == (
        404, {"error": "Request for unknown model: 'tri' version 4 is not found"})
    with grpcclient.InferenceServerClient(f"127.0.0.1:{tri.grpc_port}") as client:
        names = {s.name for s in client.get_inference_statistics().model_stats}
        assert names >= {"tri", "tri.add_sub", "tri.single"}
        with pytest.raises(InferenceServerException) as info:
            client.get_inference_statistics("ghost")
        assert info.value.message() == "Request for unknown model: 'ghost' is not found"
        assert info.value.status() == "StatusCode.NOT_FOUND"


def test_the_aio_clients_read_the_same_statistics(tri: Cluster) -> None:
    async def read() -> tuple[dict, dict]:
        async with httpaio.InferenceServerClient(f"127.0.0.1:{tri.http_port}") as http:
            await http.infer("tri.single", _inputs(httpaio)[:1])
            over_http = (await http.get_inference_statistics("tri.single"))["model_stats"][0]
        grpc = grpcaio.InferenceServerClient(f"127.0.0.1:{tri.grpc_port}")
        try:
            over_grpc = (await grpc.get_inference_statistics("tri.single")).model_stats[0]
        finally:
            await grpc.close()
        return over_http, _as_dict(grpcaio, over_grpc)

    over_http, over_grpc = asyncio.run(read())
    assert over_http == over_grpc  # nothing ran between the two reads


def test_two_gateways_answer_the_clusters_figures(tri: Cluster) -> None:
    second_http, second_grpc = free_port(), free_port()
    tri._start("gateway", [
        "gateway", "--frontend", f"tcp://127.0.0.1:{tri.frontend_port}",
        "--http-port", str(second_http), "--grpc-port", str(second_grpc),
        "--host", "127.0.0.1"])
    with httpclient.InferenceServerClient(f"127.0.0.1:{second_http}") as second:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if second.is_model_ready("tri.single"):
                    break
            except Exception:  # not listening yet
                pass
            time.sleep(0.1)
        with httpclient.InferenceServerClient(f"127.0.0.1:{tri.http_port}") as first:
            for _ in range(3):
                first.infer("tri.single", _inputs(httpclient)[:1])
            second.infer("tri.single", _inputs(httpclient)[:1])
            through_first = first.get_inference_statistics("tri.single")
            through_second = second.get_inference_statistics("tri.single")
    assert through_first == through_second
    with grpcclient.InferenceServerClient(f"127.0.0.1:{second_grpc}") as grpc_second:
        entry = _as_dict(grpcclient, grpc_second.get_inference_statistics("tri.single")
                         .model_stats[0])
    assert entry == through_first["model_stats"][0]
