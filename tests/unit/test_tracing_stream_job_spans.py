"""The spans of streams and jobs (zeroserve.tracing.spans), exported to the SDK's in-memory
exporter: the broker's stream span, the worker's stream span current in a sync and an async
generator, the trace context taken out of a stream's and a job's inputs, a job run's link."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import zeroserve
from batching.queue import Pending
from worker.job_child import run_job
from worker.streams import StreamRun
from zeroserve.config import StreamSettings
from zeroserve.service import service_spec
from zeroserve.tracing import with_trace
from zeroserve.tracing.spans import BrokerTracer, GatewayTracer, WorkerTracer
from zeroserve.wire import codec
from zeroserve.wire.backend import BatchItem
from zeroserve.wire.envelope import Status, unpack_map

TRACE = 0x4bf92f3577b34da6a3ce929d0e0e4736
EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
USER = PROVIDER.get_tracer("user")


def _header(span_id: int) -> str:
    return f"00-{TRACE:032x}-{span_id:016x}-01"


def with_trace_inputs(inputs: dict, span_id: int) -> dict:
    """``inputs`` as a worker decodes them from a traced request: the context first."""
    return codec.decode(with_trace(codec.encode(inputs)[0], _header(span_id)))


@pytest.fixture(autouse=True)
def _clear() -> None:
    EXPORTER.clear()


@zeroserve.service(name="gen")
class Gen:
    @zeroserve.api
    def spell(self, word: str):
        for letter in word:
            with USER.start_as_current_span("user spell"):
                yield letter

    @zeroserve.api
    async def aspell(self, word: str):
        for letter in word:
            with USER.start_as_current_span("user aspell"):
                await asyncio.sleep(0)
                yield letter

    @zeroserve.api
    def broken(self, word: str):
        yield word
        raise RuntimeError("broken")

    @zeroserve.task
    def echo(self, word: str) -> str:
        return word


def _stream(endpoint: str, inputs: dict, tracing: WorkerTracer | None) -> tuple[Any, list]:
    """Run a stream of ``Gen.endpoint`` to its end: its RESULT item and the chunks sent."""
    meta, frames = codec.encode(inputs)
    sent: list = []

    async def call_sync(fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    async def run() -> Any:
        spec = service_spec(Gen)
        stream = StreamRun(1, BatchItem(b"r", 5000, [meta, *frames]), spec.endpoints[endpoint],
                           Gen(), sent.append, call_sync, StreamSettings(), service="gen",
                           tracing=tracing)
        return (await stream.run()).items[0]

    return asyncio.run(run()), sent


@pytest.mark.parametrize("endpoint", ["spell", "aspell"])
def test_a_streams_span_is_current_while_its_generator_runs(endpoint: str) -> None:
    item, _ = _stream(endpoint, with_trace_inputs({"word": "ab"}, 5), WorkerTracer(PROVIDER))
    assert item.status is Status.OK
    spans = EXPORTER.get_finished_spans()
    stream = next(s for s in spans if s.name == "worker stream")
    assert stream.parent.span_id == 5 and stream.context.trace_id == TRACE
    assert stream.attributes["zeroserve.stream.chunks"] == 2
    assert stream.attributes["zeroserve.endpoint"] == endpoint
    assert stream.status.status_code is StatusCode.UNSET
    users = [s for s in spans if s.name == f"user {endpoint}"]
    assert len(users) == 2
    assert {s.parent.span_id for s in users} == {stream.context.span_id}


def test_a_failed_stream_marks_its_span_and_an_untraced_one_has_none() -> None:
    item, _ = _stream("broken", with_trace_inputs({"word": "a"}, 6), WorkerTracer(PROVIDER))
    assert item.status is Status.USER_ERROR
    (stream,) = [s for s in EXPORTER.get_finished_spans() if s.name == "worker stream"]
    assert stream.status.status_code is StatusCode.ERROR
    assert "broken" in (stream.status.description or "")
    assert stream.attributes["zeroserve.stream.chunks"] == 1
    EXPORTER.clear()
    assert _stream("spell", {"word": "a"}, WorkerTracer(PROVIDER))[0].status is Status.OK
    assert [s.name for s in EXPORTER.get_finished_spans()] == ["user spell"]


def test_a_stream_without_tracing_takes_the_context_out_of_its_inputs() -> None:
    item, sent = _stream("spell", with_trace_inputs({"word": "ab"}, 7), None)
    assert item.status is Status.OK and len(sent) >= 1  # no unexpected zs.traceparent argument
    assert not [s for s in EXPORTER.get_finished_spans() if s.name == "worker stream"]


def test_the_broker_names_a_streams_batch_span() -> None:
    tracer = BrokerTracer(PROVIDER)
    meta = with_trace(codec.encode({"x": 1})[0], _header(3))
    tracer.dispatched(4, "gen", "spell", "w-1", [Pending(b"a", b"gw", 10.0, 0.0, [meta], 1)],
                      1.0, stream=True)
    tracer.answered(4, 3.0)
    assert [(s.name, s.parent.span_id) for s in EXPORTER.get_finished_spans()] == [
        ("broker queue", 3), ("broker stream", 3)]


def test_a_job_run_links_to_its_submission_in_a_trace_of_its_own() -> None:
    tracer = WorkerTracer(PROVIDER)
    ok = tracer.job_run(_header(8), "j1", "echo", 2)
    tracer.job_ended(ok, "succeeded")
    failed = tracer.job_run(None, "j2", "echo", 1)
    tracer.job_ended(failed, "failed", "ValueError: no")
    first, second = EXPORTER.get_finished_spans()
    assert first.parent is None and first.context.trace_id != TRACE
    assert [(link.context.trace_id, link.context.span_id) for link in first.links] == [
        (TRACE, 8)]
    assert dict(first.attributes) == {"zeroserve.job.id": "j1", "zeroserve.job.task": "echo",
                                      "zeroserve.job.attempt": 2,
                                      "zeroserve.job.outcome": "succeeded"}
    assert first.status.status_code is StatusCode.UNSET
    assert second.links == () and second.status.status_code is StatusCode.ERROR
    assert second.status.description == "ValueError: no"


def test_a_job_child_takes_the_context_out_of_the_inputs() -> None:
    sent: list = []
    inputs = with_trace(codec.encode({"word": "hi"}, threshold=1 << 62)[0], _header(9))
    run_job(service_spec(Gen), Gen(), {"job_id": "j", "attempt": 1, "task": "echo",
                                       "inputs": inputs}, sent.append, lambda: False)
    last = unpack_map(sent[-1], "m")
    assert last["kind"] == "succeeded" and codec.decode(last["result"]) == "hi"


def test_a_submission_names_the_current_span_and_learns_its_task() -> None:
    tracer = GatewayTracer(PROVIDER)
    span, token = tracer.begin("jobs", {"traceparent": _header(4)}.get)
    traceparent = tracer.submission("gen", "echo")
    tracer.end(span, 202, token=token)
    (done,) = EXPORTER.get_finished_spans()
    assert done.name == "jobs gen.echo" and done.parent.span_id == 4
    assert traceparent == _header(done.context.span_id)
