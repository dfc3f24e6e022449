"""OpenTelemetry traces of a real cluster (docs/tracing.md), collected by an OTLP/HTTP receiver
inside the test: one call is one trace across the gateway, the broker and the worker, with the
right parents; a batch links the requests it served; a dependency call and the endpoint's own
spans nest under the caller's execute span; a sampling ratio of 0 sends nothing."""
from __future__ import annotations

import concurrent.futures as cf
import time
from pathlib import Path

import grpc
import pytest
from cluster import Cluster
from otlp_receiver import CLIENT, SERVER, Collector, Span, caller_traceparent, one, tracing_env

import zeroserve
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc
from zeroserve.wire import codec

pytestmark = pytest.mark.integration

SERVICES = str(Path(__file__).resolve().parent.parent / "tracing_services.py")


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """A cluster with tracing on: the ``traced`` service (one slot: batches form) and the
    ``relay`` service that calls it."""
    collector = Collector()
    cluster = Cluster(tmp_path_factory.mktemp("tracing"), tracing_env(collector))
    try:
        cluster.broker()
        cluster.gateway()
        cluster.worker(f"{SERVICES}:Traced", "--slots", "1")
        cluster.worker(f"{SERVICES}:Relay", "--frontend",
                       f"tcp://127.0.0.1:{cluster.frontend_port}")
        cluster.wait_ready(2)
        yield cluster, collector
    finally:
        cluster.stop()
        collector.close()


def _header(headers: dict, name: str) -> str:
    return {key.lower(): value for key, value in headers.items()}[name]


def test_a_rest_call_is_one_trace_across_the_three_daemons(traced) -> None:
    cluster, collector = traced
    header, trace_id, caller_span = caller_traceparent()
    status, body, headers = cluster.post("/traced/greet", {"name": "ada"},
                                         headers={"traceparent": header})
    assert (status, body) == (200, "hello ada")
    answered = _header(headers, "traceparent").split("-")
    assert answered[1] == trace_id and answered[3] == "01"  # the caller's flags

    spans = collector.trace(trace_id, "rest traced.greet", "broker queue", "broker batch",
                            "worker decode", "worker execute", "worker encode", "user greet")
    gateway = one(spans, "rest traced.greet")
    assert (gateway.service, gateway.kind, gateway.parent) == (
        "zeroserve-gateway", SERVER, caller_span)
    assert gateway.span_id == answered[2]  # the answer names the gateway's span
    assert gateway.attributes["zeroserve.route"] == "rest"
    assert gateway.attributes["zeroserve.service"] == "traced"
    assert gateway.attributes["zeroserve.endpoint"] == "greet"
    assert gateway.attributes["http.response.status_code"] == 200
    for name in ("broker queue", "broker batch"):
        assert (one(spans, name).service, one(spans, name).parent) == (
            "zeroserve-broker", gateway.span_id)
    batch = one(spans, "broker batch")
    assert batch.links == [(trace_id, gateway.span_id)]
    assert batch.attributes["zeroserve.batch.size"] == 1
    for name in ("worker decode", "worker execute", "worker encode"):
        assert (one(spans, name).service, one(spans, name).parent) == (
            "zeroserve-worker", gateway.span_id)
    execute = one(spans, "worker execute")
    user = one(spans, "user greet")
    assert (user.service, user.parent) == ("zeroserve-worker", execute.span_id)
    assert {s.service for group in spans.values() for s in group} == {
        "zeroserve-gateway", "zeroserve-broker", "zeroserve-worker"}


def test_a_call_without_traceparent_starts_a_trace_and_async_code_nests(traced) -> None:
    cluster, collector = traced
    status, body, headers = cluster.post("/traced/agreet", {"name": "bob"})
    assert (status, body) == (200, "hello bob")
    _, trace_id, span_id, flags = _header(headers, "traceparent").split("-")
    assert int(flags, 16) & 1  # sampled
    spans = collector.trace(trace_id, "rest traced.agreet", "worker execute", "user agreet")
    gateway = one(spans, "rest traced.agreet")
    assert (gateway.span_id, gateway.parent) == (span_id, "")  # the trace's root
    assert one(spans, "user agreet").parent == one(spans, "worker execute").span_id


def test_a_failing_endpoint_marks_its_spans_failed_and_still_answers_traceparent(traced
                                                                                 ) -> None:
    cluster, collector = traced
    header, trace_id, _ = caller_traceparent()
    status, body, headers = cluster.post("/traced/fail", {"why": "no"},
                                         headers={"traceparent": header})
    assert status == 500 and "no" in body["error"]
    assert _header(headers, "traceparent").split("-")[1] == trace_id
    spans = collector.trace(trace_id, "rest traced.fail", "worker execute")
    assert one(spans, "worker execute").error
    gateway = one(spans, "rest traced.fail")
    assert gateway.error and gateway.attributes["http.response.status_code"] == 500


def test_a_grpc_call_joins_its_callers_trace_and_answers_traceparent(traced) -> None:
    cluster, collector = traced
    header, trace_id, caller_span = caller_traceparent()
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        stub = pb_grpc.ServingStub(channel)
        reply, call = stub.Call.with_call(
            pb.CallRequest(service="traced", endpoint="greet",
                           inputs=codec.encode({"name": "eve"})[0]),
            metadata=(("traceparent", header),), timeout=10)
        with pytest.raises(grpc.RpcError) as failed:
            stub.Call(pb.CallRequest(service="traced", endpoint="nowhere",
                                     inputs=codec.encode({})[0]), timeout=10)
    assert codec.decode(reply.value) == "hello eve"
    answered = dict(call.trailing_metadata())["traceparent"].split("-")
    assert answered[1] == trace_id
    spans = collector.trace(trace_id, "grpc traced.greet", "broker batch", "worker execute")
    gateway = one(spans, "grpc traced.greet")
    assert (gateway.service, gateway.kind, gateway.parent, gateway.span_id) == (
        "zeroserve-gateway", SERVER, caller_span, answered[2])
    assert gateway.attributes["rpc.grpc.status_code"] == 0
    assert one(spans, "worker execute").parent == gateway.span_id
    assert failed.value.code() is grpc.StatusCode.NOT_FOUND
    failed_trace = dict(failed.value.trailing_metadata())["traceparent"].split("-")[1]
    refused = collector.trace(failed_trace, "grpc")["grpc"][0]
    assert refused.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


def test_a_batch_span_links_every_request_it_served(traced) -> None:
    cluster, collector = traced
    callers = [caller_traceparent() for _ in range(12)]

    def call(caller: tuple[str, str, str]) -> int:
        status, body, _ = cluster.post("/traced/size", {"x": [[1.0, 2.0]]},
                                       headers={"traceparent": caller[0]})
        assert status == 200, body
        return int(body[0][0])

    with cf.ThreadPoolExecutor(len(callers)) as pool:
        sizes = list(pool.map(call, callers))
    assert max(sizes) > 1  # batches did form
    ours = {trace_id for _, trace_id, _ in callers}

    def all_came(got: list[Span]) -> bool:
        served = sum(s.attributes["zeroserve.batch.size"] for s in got
                     if s.name == "broker batch" and s.trace_id in ours)
        executed = sum(s.attributes["zeroserve.batch.size"] for s in got
                       if s.name == "worker execute" and s.trace_id in ours)
        return served == executed == len(callers) and all(
            ours <= {s.trace_id for s in got if s.name == name}
            for name in ("worker decode", "rest traced.size"))

    spans = collector.wait(all_came)
    gateway_of = {s.trace_id: s.span_id for s in spans
                  if s.name == "rest traced.size" and s.trace_id in ours}
    batches = [s for s in spans if s.name == "broker batch" and s.trace_id in ours]
    shared = [b for b in batches if b.attributes["zeroserve.batch.size"] > 1]
    assert shared
    for batch in shared:
        assert len(batch.links) == batch.attributes["zeroserve.batch.size"]
        assert all(gateway_of[trace_id] == span_id for trace_id, span_id in batch.links)
        assert batch.parent == gateway_of[batch.trace_id]
        # the worker's one call of the merged batch links the same requests
        execute = [s for s in spans if s.name == "worker execute"
                   and set(s.links) == set(batch.links)]
        assert len(execute) == 1
        assert execute[0].attributes["zeroserve.batch.size"] == len(batch.links)


@pytest.mark.parametrize("endpoint", ["relay", "relay_sync"])
def test_a_dependency_call_nests_under_the_callers_execute_span(traced, endpoint) -> None:
    cluster, collector = traced
    header, trace_id, _ = caller_traceparent()
    status, body, _ = cluster.post(f"/relay/{endpoint}", {"name": "kim"},
                                   headers={"traceparent": header})
    assert (status, body) == (200, "hello kim")
    spans = collector.trace(trace_id, f"rest relay.{endpoint}", "call traced.greet",
                            "user greet", "worker execute", "worker execute", "broker queue",
                            "broker queue")  # the caller's and the callee's
    caller = one(spans, "worker execute", **{"zeroserve.service": "relay"})
    called = one(spans, "call traced.greet")
    assert called.kind == CLIENT and called.service == "zeroserve-worker"
    if endpoint == "relay_sync":  # the call from the endpoint's thread, inside its own span
        assert called.parent == one(spans, "user relay").span_id
        assert one(spans, "user relay").parent == caller.span_id
    else:
        assert called.parent == caller.span_id
    callee = one(spans, "worker execute", **{"zeroserve.service": "traced"})
    assert callee.parent == called.span_id
    assert one(spans, "broker queue", **{"zeroserve.service": "traced"}).parent == \
        called.span_id
    assert one(spans, "user greet").parent == callee.span_id


def test_streams_are_answered_with_tracing_on_and_get_the_gateways_span(traced) -> None:
    cluster, collector = traced
    header, trace_id, caller_span = caller_traceparent()
    with zeroserve.Client(cluster.url) as client:
        assert list(client.stream("traced", "count", n=3)) == [0, 1, 2]
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        chunks = pb_grpc.ServingStub(channel).Stream(
            pb.CallRequest(service="traced", endpoint="count",
                           inputs=codec.encode({"n": 4})[0]),
            metadata=(("traceparent", header),), timeout=10)
        assert [codec.decode(c.value) for c in chunks] == [0, 1, 2, 3]
        answered = dict(chunks.trailing_metadata())["traceparent"]
    assert answered.split("-")[1] == trace_id
    gateway = one(collector.trace(trace_id, "grpc traced.count"), "grpc traced.count")
    assert (gateway.parent, gateway.attributes["rpc.grpc.status_code"]) == (caller_span, 0)


def test_a_sampling_ratio_of_zero_sends_nothing(tmp_path: Path) -> None:
    collector = Collector()
    cluster = Cluster(tmp_path, tracing_env(collector, ZEROSERVE_TRACING_SAMPLE_RATIO="0"))
    try:
        cluster.broker()
        cluster.gateway()
        cluster.worker(f"{SERVICES}:Traced")
        cluster.wait_ready(1)
        for name in ("a", "b", "c"):
            status, _, headers = cluster.post("/traced/greet", {"name": name})
            assert status == 200
            flags = int(_header(headers, "traceparent").rsplit("-", 1)[1], 16)
            assert not flags & 1  # not sampled, and passed on as such
        cluster.stop()  # each daemon exports what it buffered as it stops
        assert all(d.proc.returncode == 0 for d in cluster.daemons)
        assert collector.spans == []
    finally:
        cluster.stop()
        collector.close()


def test_sampled_spans_are_exported_when_the_daemons_stop(tmp_path: Path) -> None:
    """The export on SIGTERM: with a schedule delay far longer than the test, only the
    daemons' shutdown can deliver the spans."""
    collector = Collector()
    cluster = Cluster(tmp_path, {**tracing_env(collector), "OTEL_BSP_SCHEDULE_DELAY": "600000"})
    try:
        cluster.broker()
        cluster.gateway()
        cluster.worker(f"{SERVICES}:Traced")
        cluster.wait_ready(1)
        header, trace_id, _ = caller_traceparent()
        assert cluster.post("/traced/greet", {"name": "z"},
                            headers={"traceparent": header})[0] == 200
        time.sleep(0.5)
        assert collector.spans == []
        cluster.stop()
        services = {s.service for s in collector.spans if s.trace_id == trace_id}
        assert services == {"zeroserve-gateway", "zeroserve-broker", "zeroserve-worker"}
    finally:
        cluster.stop()
        collector.close()



def test_a_worker_without_tracing_serves_a_gateway_that_traces(tmp_path: Path) -> None:
    """The trace context rides in the inputs map: a worker whose tracing is off still takes it
    out before the endpoint sees it."""
    collector = Collector()
    cluster = Cluster(tmp_path, tracing_env(collector))
    try:
        cluster.broker()
        cluster.gateway()
        cluster.worker(f"{SERVICES}:Traced", env={"ZEROSERVE_TRACING_OTLP_ENDPOINT": ""})
        cluster.wait_ready(1)
        header, trace_id, _ = caller_traceparent()
        assert cluster.post("/traced/greet", {"name": "x"}, headers={"traceparent": header})[
            :2] == (200, "hello x")
        assert cluster.post("/traced/size", {"x": [[1.0, 2.0]]},
                            headers={"traceparent": header})[:2] == (200, [[1.0, 1.0]])
        collector.trace(trace_id, "rest traced.greet", "rest traced.size", "broker batch")
        cluster.stop()
        assert not [s for s in collector.spans if s.service == "zeroserve-worker"]
    finally:
        cluster.stop()
        collector.close()
