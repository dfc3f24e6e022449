"""The spans of the broker and the worker (zeroserve.tracing.spans), exported to the SDK's
in-memory exporter, with the broker core's clock given by the test."""
from __future__ import annotations

import asyncio

import numpy as np
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import StatusCode

import zeroserve
from batching.queue import Pending
from worker.runner import BatchRunner
from zeroserve.service import service_spec
from zeroserve.tracing import with_trace
from zeroserve.tracing.spans import BrokerTracer, WorkerTracer, parent_context, span_context
from zeroserve.wire import codec
from zeroserve.wire.backend import Batch, BatchItem
from zeroserve.wire.envelope import Status

TRACE = 0x4bf92f3577b34da6a3ce929d0e0e4736


def _header(span_id: int, flags: str = "01") -> str:
    return f"00-{TRACE:032x}-{span_id:016x}-{flags}"


def _provider(ratio: float = 1.0) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _pending(request_id: bytes, arrived: float, header: str | None) -> Pending:
    meta = codec.encode({"x": 1})[0]
    if header is not None:
        meta = with_trace(meta, header)
    return Pending(request_id, b"gw", arrived + 10.0, arrived, [meta], 2)


def test_the_broker_spans_a_batch_and_each_traced_requests_wait_on_its_own_clock() -> None:
    provider, exporter = _provider()
    tracer = BrokerTracer(provider)
    tracer.wall_offset = 1000.0  # core time 5.0 is 1005 s after the epoch
    items = [_pending(b"a", 5.0, _header(1)), _pending(b"b", 5.5, None),
             _pending(b"c", 5.75, _header(3))]
    tracer.dispatched(7, "svc", "ep", "w-1", items, 6.0)
    queued = exporter.get_finished_spans()
    assert [(s.name, s.parent.span_id, s.start_time, s.end_time) for s in queued] == [
        ("broker queue", 1, 1005_000_000_000, 1006_000_000_000),
        ("broker queue", 3, 1005_750_000_000, 1006_000_000_000)]
    tracer.answered(7, 6.25)
    batch = exporter.get_finished_spans()[-1]
    assert batch.name == "broker batch" and batch.parent.span_id == 1
    assert [link.context.span_id for link in batch.links] == [1, 3]
    assert (batch.start_time, batch.end_time) == (1006_000_000_000, 1006_250_000_000)
    assert batch.attributes["zeroserve.batch.size"] == 3
    assert batch.attributes["zeroserve.batch.rows"] == 6
    assert batch.attributes["zeroserve.worker"] == "w-1"
    assert batch.status.status_code is StatusCode.UNSET


def test_a_batch_that_no_request_traces_gets_no_span_and_a_lost_one_ends_failed() -> None:
    provider, exporter = _provider()
    tracer = BrokerTracer(provider)
    tracer.dispatched(1, "svc", "ep", "w-1", [_pending(b"a", 0.0, None)], 1.0)
    tracer.answered(1, 2.0)
    assert exporter.get_finished_spans() == ()
    tracer.dispatched(2, "svc", "ep", "w-1", [_pending(b"a", 0.0, _header(9))], 1.0)
    tracer.answered(2, 2.0, "worker w-1 lost")
    batch = exporter.get_finished_spans()[-1]
    assert batch.status.status_code is StatusCode.ERROR
    tracer.answered(2, 3.0)  # once only
    assert len(exporter.get_finished_spans()) == 2


def test_a_caller_that_does_not_sample_is_followed() -> None:
    provider, exporter = _provider(ratio=1.0)
    tracer = BrokerTracer(provider)
    tracer.dispatched(1, "svc", "ep", "w-1", [_pending(b"a", 0.0, _header(9, "00"))], 1.0)
    tracer.answered(1, 2.0)
    assert exporter.get_finished_spans() == ()


def test_the_workers_execute_span_is_current_and_links_every_request() -> None:
    provider, exporter = _provider()
    tracer = WorkerTracer(provider)
    first = tracer.decoded((_header(1), "k=v"), 0)
    second = tracer.decoded((_header(2), ""), 0)
    assert tracer.decoded(None, 0) is None and tracer.decoded(("bad", ""), 0) is None
    assert first is not None and second is not None
    with tracer.execute([first, second], "svc", "ep") as execute:
        inner = provider.get_tracer("user").start_span("user")
        inner.end()
        with tracer.dependency_call("other", "ep", None) as (traceparent, tracestate):
            pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["worker execute"].parent.span_id == 1
    assert [link.context.span_id for link in spans["worker execute"].links] == [1, 2]
    assert spans["user"].parent.span_id == execute.get_span_context().span_id
    call = spans["call other.ep"]
    assert call.parent.span_id == execute.get_span_context().span_id
    assert traceparent == _header(call.context.span_id) and tracestate == "k=v"


def test_a_remote_context_keeps_its_flags_and_state() -> None:
    remote = span_context(_header(5, "00"), "a=1")
    assert remote is not None and not remote.trace_flags.sampled
    assert remote.trace_state.to_header() == "a=1" and remote.is_remote
    assert span_context("nonsense") is None
    assert parent_context(remote) is not None


def _runner(tracing: WorkerTracer | None) -> tuple[BatchRunner, list]:
    seen: list = []

    @zeroserve.service(name="s")
    class S:
        @zeroserve.api
        def echo(self, x: int) -> int:
            seen.append((x, trace.get_current_span().get_span_context().span_id))
            return x

        @zeroserve.api(batchable=True)
        def rows(self, x: np.ndarray) -> np.ndarray:
            seen.append((x.tolist(), trace.get_current_span().get_span_context().span_id))
            return x

    async def threads(fn):
        return fn()

    return BatchRunner(service_spec(S), S(), threads, lambda: 0.0, tracing), seen


def _item(request_id: bytes, inputs: dict, header: str | None) -> BatchItem:
    meta, frames = codec.encode(inputs)
    return BatchItem(request_id, 1000, [with_trace(meta, header) if header else meta, *frames])


def test_a_runner_without_tracing_takes_the_trace_context_out_of_the_inputs() -> None:
    runner, seen = _runner(None)
    result = runner.run_inline(Batch(1, "echo", [_item(b"a", {"x": 5}, _header(1))]))
    assert [it.status for it in result.items] == [Status.OK]
    assert seen == [(5, 0)]  # the endpoint got its inputs only, and no span is current


def test_a_merged_batch_is_one_execute_span_current_in_the_endpoint() -> None:
    provider, exporter = _provider()
    runner, seen = _runner(WorkerTracer(provider))
    batch = Batch(1, "rows", [_item(b"a", {"x": np.ones((1, 2))}, _header(1)),
                              _item(b"b", {"x": np.ones((2, 2))}, None),
                              _item(b"c", {"x": np.ones((1, 2))}, _header(3))])
    result = asyncio.run(runner.run(batch))
    assert [it.status for it in result.items] == [Status.OK] * 3
    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == [
        "worker decode", "worker decode", "worker encode", "worker execute"]
    execute = next(s for s in spans if s.name == "worker execute")
    assert seen == [([[1.0, 1.0]] * 4, execute.context.span_id)]
    assert execute.parent.span_id == 1
    assert [link.context.span_id for link in execute.links] == [1, 3]
