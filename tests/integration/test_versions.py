"""Two versions of one service served side by side (tests/version_services.py): tritonclient
over HTTP and gRPC calling explicit versions, version-less calls going to the latest, the
``zeroserve traffic`` split counted over 1,000 calls and cleared, Triton's wording for an
unknown version, input and output, versions in the metadata and the repository index, and the
REST header and the SDK naming a version."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from cluster import ROOT, Cluster
from tritonclient.utils import InferenceServerException

import zeroserve

pytestmark = pytest.mark.integration

SERVICES = ROOT / "tests" / "version_services.py"
CALLS = 1000


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(tmp_path_factory.mktemp("versions"))
    try:
        cluster.broker()
        cluster.gateway()
        cluster.worker(f"{SERVICES}:RankerV1")
        cluster.worker(f"{SERVICES}:RankerV2")
        cluster.wait_ready(2, service="ranker")
        _wait_for(cluster, lambda s: s.get("versions", {}).keys() == {"1", "2"})
        yield cluster
    finally:
        cluster.stop()


def _services(cluster: Cluster) -> dict:
    status, body = cluster.get("/v1/services")
    assert status == 200, body
    return body["services"]["ranker"] if "services" in body else body["ranker"]


def _wait_for(cluster: Cluster, ok, timeout: float = 10.0) -> None:
    """Until the gateway's description of ``ranker`` satisfies ``ok`` (it refreshes the
    models every 0.5 s in the tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok(_services(cluster)):
            return
        time.sleep(0.1)
    raise AssertionError(f"the gateway never saw it: {_services(cluster)}")


def _traffic(cluster: Cluster, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "zeroserve", "traffic", "ranker", *args, "--frontend",
         f"tcp://127.0.0.1:{cluster.frontend_port}"],
        capture_output=True, text=True, timeout=30, env=cluster.env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _which(cluster: Cluster, version: int | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if version is not None:
        headers["X-Zeroserve-Version"] = str(version)
    request = urllib.request.Request(cluster.url + "/ranker/which", data=b"{}", method="POST",
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=10) as resp:
        value = json.loads(resp.read())
        assert resp.headers["X-Zeroserve-Version"] == str(value)
        return value


def _count(cluster: Cluster, calls: int = CALLS) -> Counter:
    with ThreadPoolExecutor(8) as pool:
        return Counter(pool.map(lambda _: _which(cluster), range(calls)))


def _v1_input(module):
    tensor = module.InferInput("INPUT0", [1, 4], "INT32")
    tensor.set_data_from_numpy(np.arange(4, dtype=np.int32).reshape(1, 4))
    return tensor


def _v2_input(module):
    tensor = module.InferInput("INPUT0", [1, 8], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 8), np.float32))
    return tensor


def _version_of(module, result) -> str:
    """The model_version an inference's answer names."""
    response = result.get_response()
    return response["model_version"] if module is httpclient else response.model_version


def _client(cluster: Cluster, module):
    port = cluster.http_port if module is httpclient else cluster.grpc_port
    return module.InferenceServerClient(f"127.0.0.1:{port}")


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_each_version_answers_with_its_own_schema_and_outputs(two: Cluster, module) -> None:
    with _client(two, module) as client:
        one = client.infer("ranker", [_v1_input(module)], model_version="1")
        assert _version_of(module, one) == "1"
        assert one.as_numpy("OUTPUT0").tolist() == [[1, 2, 3, 4]]
        assert one.as_numpy("OUTPUT1") is None
        two_ = client.infer("ranker.score", [_v2_input(module)], model_version="2")
        assert two_.as_numpy("OUTPUT0").tolist() == [[2.0] * 8]
        assert two_.as_numpy("OUTPUT1").tolist() == [8.0]
        with pytest.raises(InferenceServerException) as wrong:  # v1's input, v2's schema
            client.infer("ranker", [_v1_input(module)], model_version="2")
        assert "INPUT0" in str(wrong.value)


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_a_version_less_call_runs_the_latest_version(two: Cluster, module) -> None:
    with _client(two, module) as client:
        answer = client.infer("ranker", [_v2_input(module)])
        assert _version_of(module, answer) == "2"
        assert answer.as_numpy("OUTPUT1").tolist() == [8.0]
    assert {_which(two) for _ in range(20)} == {2}


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_triton_wording_for_an_unknown_version_input_and_output(two: Cluster, module) -> None:
    with _client(two, module) as client:
        for call in (lambda: client.infer("ranker", [_v1_input(module)], model_version="3"),
                     lambda: client.get_model_metadata("ranker", model_version="3")):
            with pytest.raises(InferenceServerException) as unknown:
                call()
            assert "Request for unknown model: 'ranker' version 3 is not found" \
                in str(unknown.value)
        bad = module.InferInput("NOPE", [1, 4], "INT32")
        bad.set_data_from_numpy(np.zeros((1, 4), np.int32))
        with pytest.raises(InferenceServerException) as unknown_input:
            client.infer("ranker", [bad], model_version="1")
        assert "unexpected inference input 'NOPE' for model 'ranker'" in str(unknown_input.value)
        with pytest.raises(InferenceServerException) as unknown_output:
            client.infer("ranker", [_v1_input(module)], model_version="1",
                         outputs=[module.InferRequestedOutput("OUTPUT1")])
        assert "unexpected inference output 'OUTPUT1' for model 'ranker'" \
            in str(unknown_output.value)
    if module is httpclient:
        status, body = two.get("/v2/models/ranker/versions/3")
        assert (status, body) == (404, {"error": "Request for unknown model: 'ranker' "
                                                 "version 3 is not found"})


def test_metadata_lists_the_versions_and_the_index_each_version_with_its_state(two: Cluster):
    with _client(two, httpclient) as client:
        latest = client.get_model_metadata("ranker")
        assert latest["versions"] == ["1", "2"]
        assert [t["datatype"] for t in latest["inputs"]] == ["FP32"]
        one = client.get_model_metadata("ranker", model_version="1")
        assert [t["datatype"] for t in one["inputs"]] == ["INT32"]
        assert client.is_model_ready("ranker", "1") and client.is_model_ready("ranker", "2")
        assert not client.is_model_ready("ranker", "3")
        index = client.get_model_repository_index()
    entries = {(e["name"], e["version"]): e["state"] for e in index}
    assert entries[("ranker", "1")] == entries[("ranker", "2")] == "READY"
    assert entries[("ranker.which", "1")] == entries[("ranker.which", "2")] == "READY"
    with _client(two, grpcclient) as client:
        assert client.get_model_metadata("ranker").versions == ["1", "2"]
        grpc_index = {(m.name, m.version) for m in client.get_model_repository_index().models}
    assert {("ranker", "1"), ("ranker", "2")} <= grpc_index


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_the_rest_route_and_the_sdk_name_a_version(two: Cluster, scheme: str) -> None:
    assert _which(two, 1) == 1 and _which(two, 2) == 2
    url = two.url if scheme == "http" else f"grpc://127.0.0.1:{two.grpc_port}"
    with zeroserve.Client(url) as client:
        assert client.call("ranker", "which", version=1) == 1
        assert client.call("ranker", "which", version=2) == 2
        assert client.call("ranker", "which") == 2
        with pytest.raises(zeroserve.NotFound, match="no version 3"):
            client.call("ranker", "which", version=3)


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_statistics_are_kept_per_version(two: Cluster, module) -> None:
    def success(client, version: str) -> int:
        answer = client.get_inference_statistics("ranker.score", model_version=version)
        if module is httpclient:
            (entry,) = answer["model_stats"]
            assert entry["version"] == version
            return entry["inference_stats"]["success"]["count"]
        (entry,) = answer.model_stats
        assert entry.version == version
        return entry.inference_stats.success.count

    with _client(two, module) as client:
        before = success(client, "1"), success(client, "2")
        for _ in range(3):
            client.infer("ranker.score", [_v1_input(module)], model_version="1")
        client.infer("ranker.score", [_v2_input(module)], model_version="2")
        after = success(client, "1"), success(client, "2")
        both = client.get_inference_statistics("ranker.score")
    assert (after[0] - before[0], after[1] - before[1]) == (3, 1)
    entries = both["model_stats"] if module is httpclient else both.model_stats
    versions = [e["version"] if module is httpclient else e.version for e in entries]
    assert versions == ["1", "2"]


def test_a_traffic_split_sends_its_share_to_each_version_until_it_is_cleared(two: Cluster):
    out = _traffic(two, "1=90", "2=10")
    assert "traffic split set to 1=90 2=10" in out
    _wait_for(two, lambda s: s.get("traffic") == {"1": 90, "2": 10})
    counts = _count(two)
    assert counts[1] + counts[2] == CALLS
    share = counts[2] / CALLS
    assert abs(share - 0.10) <= 0.03, counts
    assert _which(two, 2) == 2 and _which(two, 1) == 1  # named versions are not split
    assert "cleared" in _traffic(two, "--clear")
    _wait_for(two, lambda s: "traffic" not in s)
    assert set(_count(two, 50)) == {2}
    broker_log = next(d for d in two.daemons if d.name == "broker").log()
    assert "traffic split of ranker set to 1=90 2=10 (was none)" in broker_log
    assert "traffic split of ranker cleared (was 1=90 2=10)" in broker_log


def test_a_bad_split_is_refused_with_the_reason(two: Cluster) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "zeroserve", "traffic", "ranker", "1=90", "3=10", "--frontend",
         f"tcp://127.0.0.1:{two.frontend_port}"],
        capture_output=True, text=True, timeout=30, env=two.env)
    assert done.returncode != 0 and "serves no version 3; it serves 1, 2" in done.stderr
    usage = subprocess.run([sys.executable, "-m", "zeroserve", "traffic", "ranker", "1=90"],
                           capture_output=True, text=True, timeout=30, env=two.env)
    assert usage.returncode == 2 and "sum to 100, not 90" in usage.stderr
