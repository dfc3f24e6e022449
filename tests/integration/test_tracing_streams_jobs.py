"""Traces of streams and jobs (docs/tracing.md) in a real cluster: a stream over REST (SSE) and
gRPC is one trace from the gateway through the broker's queue and stream spans to the worker's
stream span, which the generator's own spans and dependency calls nest under; a worker without
tracing still serves a traced stream; a job's run span links to its submission's span."""
from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from cluster import Cluster
from otlp_receiver import CLIENT, Collector, Span, caller_traceparent, one, tracing_env

from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc
from zeroserve.wire import codec

pytestmark = pytest.mark.integration

SERVICES = str(Path(__file__).resolve().parent.parent / "tracing_services.py")


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """A tracing cluster: ``traced`` (streams), ``relay`` (streams that call ``traced``) and
    ``tracedjobs`` (tasks, one job slot)."""
    collector = Collector()
    cluster = Cluster(tmp_path_factory.mktemp("tracing_streams"), tracing_env(collector))
    try:
        cluster.broker()
        cluster.gateway()
        cluster.worker(f"{SERVICES}:Traced")
        cluster.worker(f"{SERVICES}:Relay", "--frontend",
                       f"tcp://127.0.0.1:{cluster.frontend_port}")
        cluster.worker(f"{SERVICES}:TracedJobs", env={"ZEROSERVE_WORKER_JOB_SLOTS": "1"})
        cluster.wait_ready(3)
        yield cluster, collector
    finally:
        cluster.stop()
        collector.close()


def _sse(cluster: Cluster, path: str, inputs: dict, traceparent: str) -> tuple[str, dict]:
    """POST a stream call asking for server-sent events: its body, its headers (lower case)."""
    req = urllib.request.Request(cluster.url + path, data=json.dumps(inputs).encode(),
                                 method="POST", headers={"Content-Type": "application/json",
                                          "Accept": "text/event-stream",
                                          "traceparent": traceparent})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read().decode(), {k.lower(): v for k, v in resp.headers.items()}


def _stream_tree(spans: dict[str, list[Span]], gateway_name: str, service: str) -> Span:
    """Check gateway -> broker queue / broker stream / worker stream; the worker's span."""
    gateway = one(spans, gateway_name)
    for name in ("broker queue", "broker stream"):  # twice if a loaded host's worker was
        ours = [s for s in spans[name]               # evicted and the request sent again
                if s.attributes["zeroserve.service"] == service]
        assert ours and all((s.service, s.parent) == ("zeroserve-broker", gateway.span_id)
                            for s in ours)
    assert "broker batch" not in spans
    stream = one(spans, "worker stream", **{"zeroserve.service": service})
    assert (stream.service, stream.parent) == ("zeroserve-worker", gateway.span_id)
    return stream


@pytest.mark.parametrize("endpoint", ["spell", "aspell"])
def test_a_rest_sse_stream_is_one_trace_and_the_generators_spans_nest(traced, endpoint
                                                                      ) -> None:
    cluster, collector = traced
    header, trace_id, caller_span = caller_traceparent()
    body, headers = _sse(cluster, f"/traced/{endpoint}", {"word": "abc"}, header)
    assert body.count("data:") >= 3 and all(f'"{c}"' in body for c in "abc")
    assert headers["traceparent"].split("-")[1] == trace_id
    spans = collector.trace(trace_id, f"rest traced.{endpoint}", "broker queue",
                            "broker stream", "worker stream", f"user {endpoint}")
    assert one(spans, f"rest traced.{endpoint}").parent == caller_span
    stream = _stream_tree(spans, f"rest traced.{endpoint}", "traced")
    assert stream.attributes["zeroserve.stream.chunks"] == 3 and not stream.error
    users = spans[f"user {endpoint}"]
    assert len(users) == 3 and {u.parent for u in users} == {stream.span_id}


def test_a_grpc_stream_is_one_trace_and_a_failed_one_marks_its_span(traced) -> None:
    cluster, collector = traced
    header, trace_id, caller_span = caller_traceparent()
    failing, failed_trace, _ = caller_traceparent()
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        stub = pb_grpc.ServingStub(channel)
        chunks = stub.Stream(pb.CallRequest(service="traced", endpoint="count",
                                            inputs=codec.encode({"n": 4})[0]),
                             metadata=(("traceparent", header),), timeout=10)
        assert [codec.decode(c.value) for c in chunks] == [0, 1, 2, 3]
        broken = stub.Stream(pb.CallRequest(service="traced", endpoint="broken",
                                            inputs=codec.encode({"after": 2})[0]),
                             metadata=(("traceparent", failing),), timeout=10)
        with pytest.raises(grpc.RpcError):
            list(broken)
    spans = collector.trace(trace_id, "grpc traced.count", "broker stream", "worker stream")
    assert one(spans, "grpc traced.count").parent == caller_span
    stream = _stream_tree(spans, "grpc traced.count", "traced")
    assert stream.attributes["zeroserve.stream.chunks"] == 4 and not stream.error
    failed = collector.trace(failed_trace, "worker stream")
    assert one(failed, "worker stream").error
    assert one(failed, "worker stream").attributes["zeroserve.stream.chunks"] == 2


@pytest.mark.parametrize("endpoint", ["relay_stream", "relay_stream_sync"])
def test_a_streams_dependency_call_is_a_child_of_its_stream_span(traced, endpoint) -> None:
    cluster, collector = traced
    header, trace_id, _ = caller_traceparent()
    body, _ = _sse(cluster, f"/relay/{endpoint}", {"name": "ann"}, header)
    assert "hello ann" in body
    spans = collector.trace(trace_id, "worker stream", "call traced.greet", "user greet",
                            "worker execute")
    stream = one(spans, "worker stream", **{"zeroserve.service": "relay"})
    called = one(spans, "call traced.greet")
    assert (called.kind, called.parent) == (CLIENT, stream.span_id)
    assert one(spans, "worker execute", **{"zeroserve.service": "traced"}).parent == \
        called.span_id


def _wait_job(cluster: Cluster, job_id: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, job = cluster.get(f"/v1/jobs/{job_id}")
        if status == 200 and job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


@pytest.mark.parametrize(("task", "inputs", "state"), [
    ("tally", {"n": 5}, "succeeded"), ("refuse", {"why": "no"}, "failed")])
def test_a_jobs_run_links_to_its_submission(traced, task, inputs, state) -> None:
    cluster, collector = traced
    header, trace_id, caller_span = caller_traceparent()
    status, body, headers = cluster.post("/v1/jobs", {
        "service": "tracedjobs", "endpoint": task, "inputs": inputs},
        headers={"traceparent": header})
    assert status == 202, body
    answered = headers.get("traceparent") or headers["Traceparent"]
    assert answered.split("-")[1] == trace_id
    assert _wait_job(cluster, body["id"])["state"] == state
    if state == "succeeded":
        assert cluster.get(f"/v1/jobs/{body['id']}/result")[1] == 10
    submit = one(collector.trace(trace_id, f"jobs tracedjobs.{task}"),
                 f"jobs tracedjobs.{task}")
    assert (submit.parent, submit.span_id) == (caller_span, answered.split("-")[2])
    runs = [s for s in collector.wait(lambda got: any(
        s.name == f"job run {task}" and s.attributes.get("zeroserve.job.id") == body["id"]
        for s in got)) if s.attributes.get("zeroserve.job.id") == body["id"]]
    assert len(runs) == 1
    run = runs[0]
    assert run.service == "zeroserve-worker" and run.trace_id != trace_id  # its own trace
    assert run.links == [(trace_id, submit.span_id)]
    assert (run.attributes["zeroserve.job.task"], run.attributes["zeroserve.job.attempt"],
            run.attributes["zeroserve.job.outcome"], run.error) == (
        task, 1, state, state != "succeeded")


def test_a_grpc_submission_is_linked_too(traced) -> None:
    cluster, collector = traced
    header, trace_id, caller_span = caller_traceparent()
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        reply = pb_grpc.JobsStub(channel).Submit(
            pb.SubmitJobRequest(service="tracedjobs", endpoint="tally",
                                inputs=codec.encode({"n": 3})[0]),
            metadata=(("traceparent", header),), timeout=10)
    job_id = reply.job.id
    assert _wait_job(cluster, job_id)["state"] == "succeeded"
    submit = one(collector.trace(trace_id, "grpc tracedjobs.tally"), "grpc tracedjobs.tally")
    assert submit.parent == caller_span
    spans = collector.wait(lambda got: any(s.attributes.get("zeroserve.job.id") == job_id
                                           for s in got))
    run = next(s for s in spans if s.attributes.get("zeroserve.job.id") == job_id)
    assert run.links == [(trace_id, submit.span_id)]


def test_a_worker_without_tracing_serves_a_traced_stream_and_job(tmp_path: Path) -> None:
    """The context rides in a stream's inputs and a job's: a worker whose tracing is off takes
    it out before the generator or the task sees it."""
    collector = Collector()
    cluster = Cluster(tmp_path, tracing_env(collector))
    off = {"ZEROSERVE_TRACING_OTLP_ENDPOINT": ""}
    try:
        cluster.broker()
        cluster.gateway()
        cluster.worker(f"{SERVICES}:Traced", env=off)
        cluster.worker(f"{SERVICES}:TracedJobs", env={**off, "ZEROSERVE_WORKER_JOB_SLOTS": "1"})
        cluster.wait_ready(2)
        header, trace_id, _ = caller_traceparent()
        body, _ = _sse(cluster, "/traced/spell", {"word": "xy"}, header)
        assert '"x"' in body and '"y"' in body and "error" not in body
        status, job, _ = cluster.post("/v1/jobs", {
            "service": "tracedjobs", "endpoint": "tally", "inputs": {"n": 4}},
            headers={"traceparent": header})
        assert status == 202, job
        assert _wait_job(cluster, job["id"])["state"] == "succeeded"
        assert cluster.get(f"/v1/jobs/{job['id']}/result")[1] == 6
        collector.trace(trace_id, "rest traced.spell", "broker stream", "jobs tracedjobs.tally")
        cluster.stop()
        assert not [s for s in collector.spans if s.service == "zeroserve-worker"]
    finally:
        cluster.stop()
        collector.close()
