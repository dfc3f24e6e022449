"""Services that call services through the broker (zeroserve.depends), with real daemons:
the pipeline's answer, batching of the callers' calls, deadlines, errors, and no deadlock
when a service calls itself or two services call each other under load."""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import time
from pathlib import Path

import grpc
import pytest
from cluster import Cluster

import zeroserve
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc
from zeroserve.wire import codec

pytestmark = pytest.mark.integration

SERVICES = str(Path(__file__).resolve().parent.parent / "pipeline_services.py")


def _worker(cluster: Cluster, cls: str, *extra: str) -> None:
    cluster.worker(f"{SERVICES}:{cls}", *extra,
                   "--frontend", f"tcp://127.0.0.1:{cluster.frontend_port}")


@pytest.fixture
def pipeline(cluster):
    cluster.broker()
    cluster.gateway()
    for cls in ("Tokenize", "Embed", "Slow", "Rank"):
        _worker(cluster, cls)
    cluster.wait_ready(4)
    return cluster


def _expected(text: str) -> float:
    return float(sum(2.0 * len(w) for w in text.split()))


def test_the_pipeline_answers_what_its_stages_composed_by_hand_give(pipeline) -> None:
    text = "the quick brown fox"
    _, words, _ = pipeline.post("/tok/split", {"text": text})
    _, vectors, _ = pipeline.post("/embed/encode", {"x": [[len(w)] for w in words]})
    by_hand = float(sum(v[0] for v in vectors))
    for endpoint in ("score", "score_sync"):
        status, body, _ = pipeline.post(f"/rank/{endpoint}", {"text": text})
        assert (status, body) == (200, by_hand) and by_hand == _expected(text)


def test_the_callee_batches_the_calls_of_concurrent_callers(pipeline) -> None:
    texts = [f"word{i} and more words {i}" for i in range(200)]
    with cf.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda t: pipeline.post("/rank/score", {"text": t}), texts))
    assert [a[:2] for a in answers] == [(200, _expected(t)) for t in texts]
    stats = pipeline.stats()
    assert stats["endpoints"]["embed.encode"]["mean_batch_size"] > 1.0
    calls = {(c["caller"], c["callee"]): c["calls"] for c in stats["dependency_calls"]}
    assert calls[("rank", "tok")] >= 200 and calls[("rank", "embed")] >= 200


def test_a_slow_callee_makes_the_call_504_at_the_callers_deadline(pipeline,
                                                                  tmp_path: Path) -> None:
    started = time.monotonic()
    status, body, _ = pipeline.post("/rank/via_slow", {"seconds": 5.0},
                                    headers={"X-Zeroserve-Timeout": "1"})
    assert status == 504 and time.monotonic() - started < 3.0, body


def test_a_call_whose_callers_deadline_passed_in_the_queue_never_runs(pipeline,
                                                                      tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    # the one slow worker (2 slots) is busy with two long calls; a third waits in its queue
    with cf.ThreadPoolExecutor(3) as pool:
        busy = [pool.submit(pipeline.post, "/slow/wait", {"seconds": 3.0}) for _ in range(2)]
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and sum(
                w["in_flight"] for w in pipeline.stats()["workers"] if w["service"] == "slow") < 2:
            time.sleep(0.02)
        status, _, _ = pipeline.post("/rank/via_slow", {"seconds": 0.0, "marker": str(marker)},
                                     headers={"X-Zeroserve-Timeout": "1"})
        assert [f.result()[0] for f in busy] == [200, 200]
    assert status == 504
    time.sleep(0.5)
    assert not marker.exists()


def test_a_failing_stage_is_named_and_its_status_propagates(pipeline) -> None:
    status, body, _ = pipeline.post("/rank/via_failing", {"why": "boom"})
    assert status == 500 and "slow.fail answered 500" in body["error"] and "boom" in body["error"]
    status, body, _ = pipeline.post("/rank/caught", {"why": "boom"})
    assert (status, body) == (200, {"service": "slow", "endpoint": "fail", "status": 500})
    status, body, _ = pipeline.post("/rank/bad_input", {})
    assert status == 400 and "tok.split answered 400" in body["error"]


def test_a_dependency_no_one_serves_is_503_naming_it(pipeline) -> None:
    status, body, _ = pipeline.post("/rank/via_nowhere", {}, headers={"X-Zeroserve-Timeout": "15"})
    assert status == 503 and "nowhere" in body["error"]
    rank = next(d for d in pipeline.daemons if "Rank" in " ".join(d.proc.args))
    assert "dependency 'nowhere' of service rank is not served" in rank.log()


def _load(cluster: Cluster, path: str, body: dict, calls: int, threads: int) -> list[int]:
    with cf.ThreadPoolExecutor(threads) as pool:
        return [a[0] for a in pool.map(
            lambda _: cluster.post(path, body, headers={"X-Zeroserve-Timeout": "20"}),
            range(calls))]


def test_a_service_that_calls_itself_makes_progress_under_load(cluster) -> None:
    cluster.broker()
    cluster.gateway()
    _worker(cluster, "Factorial", "--slots", "2")
    cluster.wait_ready(1)
    assert cluster.post("/fact/fact", {"n": 3})[:2] == (200, 6)
    statuses = _load(cluster, "/fact/fact", {"n": 2}, 60, 8)
    assert statuses.count(200) >= 55, statuses


def test_two_services_calling_each_other_make_progress_under_load(cluster) -> None:
    cluster.broker()
    cluster.gateway()
    _worker(cluster, "PingA", "--slots", "2")
    _worker(cluster, "PingB", "--slots", "2")
    cluster.wait_ready(2)
    assert cluster.post("/ping_a/bounce", {"n": 3})[:2] == (200, 3)
    statuses = _load(cluster, "/ping_a/bounce", {"n": 2}, 60, 8)
    assert statuses.count(200) >= 55, statuses


def test_a_streaming_callee_is_iterated_and_its_errors_propagate(cluster) -> None:
    broker = cluster.broker()
    cluster.gateway()
    _worker(cluster, "Words")
    _worker(cluster, "Shout")
    cluster.wait_ready(2)
    assert cluster.post("/shout/upper", {"text": "a streaming callee"})[:2] == (
        200, ["A", "STREAMING", "CALLEE"])
    assert cluster.post("/shout/first", {"text": "one two three"})[:2] == (200, "one")
    status, body, _ = cluster.post("/shout/failing", {"text": "x"})
    assert status == 500 and "words.fails_after_one answered 500" in body["error"]
    with zeroserve.Client(cluster.url) as client:
        assert list(client.stream("shout", "relay", text="ab cd")) == ["ba", "dc"]
    figures = cluster.stats()["endpoints"]["words.each"]["streams"]
    # a worker evicted on a loaded machine (0.6 s of missed heartbeats) has its unstarted
    # streams dispatched again, each counted as started once more
    evicted = "evicted worker" in broker.log()
    assert (figures["started"] >= 3 if evicted else figures["started"] == 3), figures
    assert figures["active"] == 0


def test_a_caller_that_asks_gets_the_request_id_and_every_stage_back(pipeline) -> None:
    status, body, headers = pipeline.post(
        "/rank/score", {"text": "two words"},
        headers={"X-Zeroserve-Stages": "1", "X-Request-Id": "req-42"})
    assert (status, body, headers["X-Request-Id"]) == (200, _expected("two words"), "req-42")
    stages = json.loads(headers["X-Zeroserve-Stages"])
    assert [(s["service"], s["endpoint"], s.get("caller")) for s in stages] == [
        ("rank", "score", None), ("tok", "split", "rank.score"),
        ("embed", "encode", "rank.score")]
    workers = {w["worker_id"]: w["service"] for w in pipeline.stats()["workers"]}
    for stage in stages:
        assert workers[stage["worker"]] == stage["service"]
        assert stage["queue_ms"] >= 0 and stage["exec_ms"] >= 0 and stage["batch"] >= 1
    assert stages[0]["exec_ms"] >= max(s["exec_ms"] for s in stages[1:])  # they ran inside it
    status, _, headers = pipeline.post("/rank/score", {"text": "two words"})
    assert status == 200 and "X-Zeroserve-Stages" not in headers  # only when asked

    status, body, headers = pipeline.post("/rank/via_failing", {"why": "no luck"},
                                          headers={"X-Zeroserve-Stages": "true"})
    assert status == 500 and "no luck" in body["error"]
    assert [s["service"] for s in json.loads(headers["X-Zeroserve-Stages"])] == ["rank", "slow"]


def test_stages_nest_as_deep_as_the_calls_and_come_back_over_grpc(cluster) -> None:
    cluster.broker()
    cluster.gateway()
    _worker(cluster, "Factorial")
    cluster.wait_ready(1)
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        stub = pb_grpc.ServingStub(channel)
        request = pb.CallRequest(service="fact", endpoint="fact",
                                 inputs=codec.encode({"n": 3})[0])
        reply, call = stub.Call.with_call(request, metadata=(("zeroserve-stages", "1"),))
        assert codec.decode(reply.value, []) == 6
        trailing = dict(call.trailing_metadata())
        stages = json.loads(trailing["zeroserve-stages"])
        assert len(trailing["zeroserve-request-id"]) == 16  # none sent: a fresh one
        assert [(s["endpoint"], s.get("caller")) for s in stages] == [
            ("fact", None), ("fact", "fact.fact"), ("fact", "fact.fact")]
        _, call = stub.Call.with_call(request)
        assert "zeroserve-stages" not in dict(call.trailing_metadata())


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_the_sdk_answers_a_call_with_its_stages_over_both_protocols(pipeline, scheme) -> None:
    url = pipeline.url if scheme == "http" else f"grpc://127.0.0.1:{pipeline.grpc_port}"
    with zeroserve.Client(url) as client:
        answer = client.call_with_stages("rank", "score", text="three short words")
    assert answer.value == _expected("three short words") and answer.request_id
    assert [(s["service"], s.get("caller")) for s in answer.stages] == [
        ("rank", None), ("tok", "rank.score"), ("embed", "rank.score")]

    async def staged() -> list:
        async with zeroserve.AsyncClient(url) as client:
            return (await client.call_with_stages("tok", "split", text="a b")).stages
    assert [(s["service"], s["endpoint"], s["version"]) for s in asyncio.run(staged())] == [
        ("tok", "split", 1)]
