"""The spans each daemon makes, with the OpenTelemetry SDK (imported only when tracing is on,
by :func:`zeroserve.tracing.start_tracing`; ``docs/tracing.md`` shows the tree they form).

Each daemon process has its own tracer provider, whose resource names the daemon
(``service.name``), a parent-based ratio sampler (a caller's sampled flag is followed, a new
trace is sampled at ``tracing.sample_ratio``) and a batch span processor exporting OTLP/HTTP
protobuf; :meth:`DaemonTracer.shutdown` exports what is buffered when the daemon stops.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
)

from zeroserve.tracing import (
    TraceParent,
    carried_traceparent,
    format_traceparent,
    parse_traceparent,
    with_trace,
)

Context = otel_context.Context


def span_context(traceparent: str | None, tracestate: str = "") -> SpanContext | None:
    """The remote span context a traceparent (and tracestate) names; None if invalid."""
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return None
    state = TraceState.from_header([tracestate]) if tracestate else None
    return SpanContext(parsed.trace_id, parsed.span_id, is_remote=True,
                       trace_flags=TraceFlags(parsed.flags & 0xff), trace_state=state)


def parent_context(remote: SpanContext) -> Context:
    """A context whose current span is ``remote``: spans started in it are its children."""
    return trace.set_span_in_context(NonRecordingSpan(remote))


def headers_of(span: Span) -> tuple[str, str]:
    """``(traceparent, tracestate)`` naming ``span``, what the next hop is given."""
    sc = span.get_span_context()
    return (format_traceparent(TraceParent(sc.trace_id, sc.span_id, int(sc.trace_flags))),
            sc.trace_state.to_header())


class DaemonTracer:
    """The tracer of one daemon process."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("zeroserve")

    def shutdown(self) -> None:
        """Export the spans still buffered (waits for the collector, within the SDK's export
        timeout), then stop: the daemon is stopping."""
        self.provider.shutdown()


class GatewayTracer(DaemonTracer):
    """The gateway's span of each call (SpanKind.SERVER), the parent of everything the call
    causes in the broker and the workers."""

    def begin(self, route: str, header: Callable[[str], str | None]) -> tuple[Span, object]:
        """Start the span of a call on ``route`` (``rest``, ``grpc``...), the child of the
        caller's trace context when its ``traceparent`` (and ``tracestate``) header or
        metadata names a valid one (``header(name)`` reads them), else of a new trace. It
        becomes the current span of the calling task, so that the requests it sends carry it;
        returns the span and the token that :func:`opentelemetry.context.detach` takes."""
        remote = span_context(header("traceparent"), header("tracestate") or "")
        span = self.tracer.start_span(
            route, context=None if remote is None else parent_context(remote),
            kind=SpanKind.SERVER, attributes={"zeroserve.route": route})
        return span, otel_context.attach(trace.set_span_in_context(span))

    def traceparent(self, span: Span) -> str:
        """The ``traceparent`` header naming ``span``, for the call's answer."""
        return headers_of(span)[0]

    def reaching(self, service: str, endpoint: str) -> Span:
        """The current span (the call's) learns the endpoint it reaches; returns it."""
        span = trace.get_current_span()
        if span.is_recording():
            route = getattr(span, "attributes", {}).get("zeroserve.route", "call")
            span.update_name(f"{route} {service}.{endpoint}")
            span.set_attributes({"zeroserve.service": service, "zeroserve.endpoint": endpoint})
        return span

    def outgoing(self, meta: bytes, service: str, endpoint: str) -> bytes:
        """A request's ``meta`` carrying the current span (the call's, :meth:`reaching`) to
        the broker and the worker."""
        span = self.reaching(service, endpoint)
        if not span.get_span_context().is_valid:
            return meta
        return with_trace(meta, *headers_of(span))

    def submission(self, service: str, task: str) -> str:
        """The ``traceparent`` naming the current span (a job submission's call, which
        learns the task it submits), that the job's run links to; "" when none is valid."""
        span = self.reaching(service, task)
        return headers_of(span)[0] if span.get_span_context().is_valid else ""

    def end(self, span: Span, status: int | None, grpc_code: int | None = None,
            token: object | None = None) -> None:
        """End a call's span with its answer: the HTTP status, or the gRPC code; ``token``
        (from :meth:`begin`) ends it being the current span."""
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if grpc_code is not None:
            span.set_attribute("rpc.grpc.status_code", grpc_code)
        if (status or 0) >= 500 or grpc_code in _GRPC_SERVER_FAULTS:
            span.set_status(StatusCode.ERROR)
        span.end()
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]


# UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS: the codes of a
# server's fault (OpenTelemetry's gRPC conventions); the others are the caller's
_GRPC_SERVER_FAULTS = frozenset({2, 4, 12, 13, 14, 15})


class BrokerTracer(DaemonTracer):
    """The broker's spans: each request's wait in its queue (made when it is dispatched, from
    its arrival), and each batch from dispatch to its RESULT, linked to every request it
    carries. ``wall_offset``: the core's clock plus it is seconds since the epoch."""

    def __init__(self, provider: TracerProvider) -> None:
        super().__init__(provider)
        self.wall_offset = 0.0
        self._batches: dict[int, Span] = {}

    def _ns(self, t: float) -> int:
        return int((t + self.wall_offset) * 1e9)

    def dispatched(self, batch_id: int, service: str, endpoint: str, worker: str,
                   items: Sequence[Any], now: float, stream: bool = False) -> None:
        """A batch of ``items`` (the queue's ``Pending`` requests) goes to ``worker``. Only the
        requests that carry a trace context get spans; a batch none of them traces, none. The
        batch span is the child of its first traced request, linked to each. A ``stream``'s
        batch (its one request) is the ``broker stream`` span, from dispatch to its end."""
        attributes = {"zeroserve.service": service, "zeroserve.endpoint": endpoint}
        links: list[Link] = []
        parent: Context | None = None
        for item in items:
            remote = span_context(carried_traceparent(item.frames[0]))
            if remote is None:
                continue
            context = parent_context(remote)
            if parent is None:
                parent = context
            links.append(Link(remote))
            self.tracer.start_span("broker queue", context=context, attributes=attributes,
                                   start_time=self._ns(item.arrived)).end(self._ns(now))
        if parent is None:
            return
        span = self.tracer.start_span("broker stream" if stream else "broker batch",
                                      context=parent, links=links,
                                      start_time=self._ns(now), attributes={
            **attributes, "zeroserve.batch.size": len(items), "zeroserve.worker": worker,
            "zeroserve.batch.rows": sum(getattr(item, "rows", 1) for item in items)})
        if span.is_recording():
            self._batches[batch_id] = span

    def answered(self, batch_id: int, now: float, failure: str = "") -> None:
        """The batch's RESULT came (or, with ``failure``, its worker was lost)."""
        span = self._batches.pop(batch_id, None)
        if span is None:
            return
        if failure:
            span.set_status(StatusCode.ERROR, failure)
        span.end(self._ns(now))


class WorkerTracer(DaemonTracer):
    """The worker's spans of a request: decode, execute (the current span while the user's
    code runs, so that its own spans and its dependency calls nest under it) and encode; and
    each dependency call (SpanKind.CLIENT), whose context the callee receives."""

    def decoded(self, carried: tuple[str, str] | None, started_ns: int) -> Context | None:
        """A request's inputs were decoded since ``started_ns`` (``time.time_ns()``); the
        context its other spans are children of, None if it carries no valid one."""
        remote = None if carried is None else span_context(*carried)
        if remote is None:
            return None
        context = parent_context(remote)
        self.tracer.start_span("worker decode", context=context, start_time=started_ns).end()
        return context

    @contextlib.contextmanager
    def execute(self, parents: Sequence[Context], service: str, endpoint: str
                ) -> Iterator[Span]:
        """The span of one call of the user's function, current within the ``with``: the
        child of the first request's context, linked to every request it serves (a merged
        batch serves several). An exception leaving it is recorded."""
        links = [Link(trace.get_current_span(p).get_span_context()) for p in parents]
        with self.tracer.start_as_current_span(
                "worker execute", context=parents[0], links=links, attributes={
                    "zeroserve.service": service, "zeroserve.endpoint": endpoint,
                    "zeroserve.batch.size": len(parents)}) as span:
            yield span

    def encoded(self, parent: Context, started_ns: int) -> None:
        """The answers were checked, split and encoded since ``started_ns``."""
        self.tracer.start_span("worker encode", context=parent, start_time=started_ns).end()

    @contextlib.contextmanager
    def dependency_call(self, service: str, endpoint: str, parent: Context | None
                        ) -> Iterator[tuple[str, str]]:
        """The span of a call of another service, current within the ``with``: the child of
        ``parent`` (the calling thread's context), else of the current context. Yields the
        ``(traceparent, tracestate)`` the call's REQUEST carries."""
        with self.tracer.start_as_current_span(
                f"call {service}.{endpoint}", context=parent, kind=SpanKind.CLIENT,
                attributes={"zeroserve.service": service,
                            "zeroserve.endpoint": endpoint}) as span:
            yield headers_of(span)

    def stream(self, carried: tuple[str, str] | None, service: str, endpoint: str
               ) -> Span | None:
        """The span of a stream's generator, started now (its first step), the child of the
        context its request carries; None if it carries no valid one. The caller makes it
        current while the generator runs and ends it with :meth:`stream_ended`."""
        remote = None if carried is None else span_context(*carried)
        if remote is None:
            return None
        return self.tracer.start_span("worker stream", context=parent_context(remote),
                                      attributes={"zeroserve.service": service,
                                                  "zeroserve.endpoint": endpoint})

    @staticmethod
    def stream_ended(span: Span, chunks: int, failure: str = "") -> None:
        """End a stream's span after ``chunks`` chunks; ``failure`` (the stream's error, a
        cancel included) marks it failed."""
        span.set_attribute("zeroserve.stream.chunks", chunks)
        if failure:
            span.set_status(StatusCode.ERROR, failure)
        span.end()

    @staticmethod
    def attach(span: Span) -> object:
        """Make ``span`` the current span of the calling task (or thread); the token that
        :meth:`detach` takes."""
        return otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def detach(token: object) -> None:
        """Undo an :meth:`attach`, in the same task."""
        otel_context.detach(token)  # type: ignore[arg-type]

    def job_run(self, submitted: str | None, job_id: str, task: str, attempt: int) -> Span:
        """The span of one attempt of a job, started now: a trace of its own, linked to the
        submission's context (``submitted``, the traceparent its inputs carry; None: no
        link), for a run may come long after the submission's trace has ended."""
        remote = span_context(submitted)
        return self.tracer.start_span(
            f"job run {task}", context=otel_context.Context(),
            links=[] if remote is None else [Link(remote)], attributes={
                "zeroserve.job.id": job_id, "zeroserve.job.task": task,
                "zeroserve.job.attempt": attempt})

    @staticmethod
    def job_ended(span: Span, outcome: str, error: str | None = None) -> None:
        """End a job attempt's span with its ``outcome`` (the event kind that ended it);
        any outcome but ``succeeded`` marks it failed."""
        span.set_attribute("zeroserve.job.outcome", outcome)
        if outcome != "succeeded":
            span.set_status(StatusCode.ERROR, error or outcome)
        span.end()

    def current(self) -> Context:
        """The calling thread's (or task's) context, for a call made from another one."""
        return otel_context.get_current()


_TRACERS: dict[str, type[DaemonTracer]] = {
    "gateway": GatewayTracer, "broker": BrokerTracer, "worker": WorkerTracer}


def start(kind: str, service_name: str, url: str, sample_ratio: float) -> DaemonTracer:
    """The tracer of a daemon of ``kind``, exporting to ``url``; also the process's global
    tracer provider."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                              sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    return _TRACERS[kind](provider)
