"""An OTLP/HTTP traces receiver for the tracing tests (tests/integration/test_tracing*.py): the
spans a real cluster exports, as the test reads them."""
from __future__ import annotations

import gzip
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cluster import free_port
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

SERVER, CLIENT = 2, 3  # the protobuf's SpanKind values


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value")) if any_value.WhichOneof("value") \
        else None


@dataclass
class Span:
    """One span as the collector received it; ids as hex."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent: str
    kind: int
    attributes: dict
    links: list = field(default_factory=list)  # [(trace id, span id)]
    error: bool = False


class Collector:
    """An OTLP/HTTP traces receiver on a free loopback port, keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.exports = 0
        self._lock = threading.Lock()
        collector = self

        class Receiver(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.receive(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def receive(self, request: ExportTraceServiceRequest) -> None:
        got = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    got.append(Span(
                        resource.get("service.name", ""), s.name, s.trace_id.hex(),
                        s.span_id.hex(), s.parent_span_id.hex(), s.kind,
                        {a.key: _value(a.value) for a in s.attributes},
                        [(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                        s.status.code == 2))
        with self._lock:
            self.exports += 1
            self.spans += got

    def wait(self, found: Callable[[list[Span]], bool], timeout: float = 10.0) -> list[Span]:
        """Every span received, once ``found`` holds of them (the daemons export every 50 ms);
        fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = list(self.spans)
            if found(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({(s.service, s.name) for s in spans})
                raise AssertionError(f"spans not found within {timeout}s; got {names}")
            time.sleep(0.05)

    def trace(self, trace_id: str, *names: str, timeout: float = 10.0) -> dict[str, list[Span]]:
        """The spans of one trace by name, once every one of ``names`` has come (a name given
        twice: two spans of that name)."""
        wanted = Counter(names)
        spans = self.wait(lambda got: not wanted - Counter(
            s.name for s in got if s.trace_id == trace_id), timeout)
        by_name: dict[str, list[Span]] = {}
        for s in spans:
            if s.trace_id == trace_id:
                by_name.setdefault(s.name, []).append(s)
        return by_name

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tracing_env(collector: Collector, **extra: str) -> dict[str, str]:
    """The settings of a cluster that traces into ``collector``. Its liveness is the default's
    (3 s) rather than the tests' fast one (0.6 s): a worker evicted on a loaded machine would
    have its requests dispatched again, each with spans of its own, and these tests count
    spans."""
    return {"ZEROSERVE_TRACING_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: spans reach the collector at once
            "ZEROSERVE_HEARTBEAT_INTERVAL_S": "1.0",
            **extra}


def caller_traceparent() -> tuple[str, str, str]:
    """A caller's sampled ``traceparent`` header, its trace id and its span id."""
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def one(by_name: dict[str, list[Span]], name: str, **attributes: Any) -> Span:
    """The one span named ``name`` with ``attributes`` among ``by_name`` (asserted)."""
    spans = [s for s in by_name[name]
             if all(s.attributes.get(k) == v for k, v in attributes.items())]
    assert len(spans) == 1, (name, attributes, by_name[name])
    return spans[0]
