"""OpenTelemetry traces across the daemons (``docs/tracing.md``): what every daemon shares.

This module never imports OpenTelemetry: a daemon whose ``tracing.otlp_endpoint`` is empty
(the default) holds None where it would hold a tracer, and pays one None check per request.
:func:`start_tracing` imports the SDK (:mod:`zeroserve.tracing.spans`) only when tracing is on.

The W3C trace context travels between the daemons inside a request's ``meta`` map, as its
first entries (``docs/protocol.md``): :data:`TRACEPARENT_KEY` and, when not empty,
:data:`TRACESTATE_KEY`. First, so that a broker with tracing on reads the traceparent from
the first bytes of the map without decoding the payload (:func:`carried_traceparent`); a
worker takes both out of the inputs before the endpoint sees them (:func:`take_carried`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import urlsplit

import msgpack

from zeroserve.config import TracingSettings

if TYPE_CHECKING:
    from zeroserve.tracing.spans import BrokerTracer, DaemonTracer, GatewayTracer, WorkerTracer

TRACEPARENT_KEY = "zs.traceparent"  # not a Python name: never an endpoint's input
TRACESTATE_KEY = "zs.tracestate"
INSTALL_HINT = "pip install 'zeroserve[tracing]'"
_CARRIED_PREFIX = 128  # bytes of a meta map that hold its first entry, the traceparent
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


class TracingError(RuntimeError):
    """Tracing is on but cannot start (the SDK is missing, a setting is out of range); the
    message says what to do."""


@dataclass(frozen=True)
class TraceParent:
    """A W3C ``traceparent`` value: ids as integers, ``flags`` the trace flags byte (bit 0:
    sampled)."""

    trace_id: int
    span_id: int
    flags: int = 1

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The trace context a ``traceparent`` header names, or None for an absent or invalid
    one (as the W3C spec asks: a bad header starts a new trace, it fails nothing). Version
    ``ff`` and all-zero ids are invalid; a version above ``00`` may carry more fields."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} \
            or set(span_id) == {"0"}:
        return None
    return TraceParent(int(trace_id, 16), int(span_id, 16), int(flags, 16))


def format_traceparent(parent: TraceParent) -> str:
    """The ``traceparent`` header of a trace context (version 00)."""
    return f"00-{parent.trace_id:032x}-{parent.span_id:016x}-{parent.flags & 0xff:02x}"


def _map_header(size: int) -> bytes:
    if size < 16:
        return bytes([0x80 | size])
    if size < 1 << 16:
        return b"\xde" + size.to_bytes(2, "big")
    return b"\xdf" + size.to_bytes(4, "big")


def _map_size(meta: bytes) -> tuple[int, int] | None:
    """(entries, header length) of a msgpack map, None if ``meta`` is not one."""
    first = meta[0] if meta else 0
    if 0x80 <= first <= 0x8f:
        return first & 0x0f, 1
    if first == 0xde and len(meta) >= 3:
        return int.from_bytes(meta[1:3], "big"), 3
    if first == 0xdf and len(meta) >= 5:
        return int.from_bytes(meta[1:5], "big"), 5
    return None


def with_trace(meta: bytes, traceparent: str, tracestate: str = "") -> bytes:
    """``meta`` (a request's msgpack map of inputs) with the trace context as its first
    entries; ``meta`` unchanged if it is not a map. The payload is not decoded: the map's
    header is rewritten and the entries put before the others."""
    size = _map_size(meta)
    if size is None:
        return meta
    entries, header = size
    added = msgpack.packb(TRACEPARENT_KEY) + msgpack.packb(traceparent)
    if tracestate:
        added += msgpack.packb(TRACESTATE_KEY) + msgpack.packb(tracestate)
        entries += 1
    return _map_header(entries + 1) + added + bytes(meta[header:])


def carried_traceparent(meta: Any) -> str | None:
    """The traceparent a request's meta carries (its first entry, :func:`with_trace`), or
    None; reads only the map's first bytes, whatever the payload's size."""
    view = memoryview(getattr(meta, "buffer", meta))
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(view[:_CARRIED_PREFIX])
    try:
        if unpacker.read_map_header() < 1 or unpacker.unpack() != TRACEPARENT_KEY:
            return None
        value = unpacker.unpack()
    except (msgpack.OutOfData, ValueError, TypeError, msgpack.UnpackException):
        return None
    return value if isinstance(value, str) else None


def take_carried(inputs: dict) -> tuple[str, str] | None:
    """Take the trace context out of a request's decoded inputs: ``(traceparent,
    tracestate)``, or None when it carries none (one dict lookup)."""
    if TRACEPARENT_KEY not in inputs:
        return None
    traceparent = inputs.pop(TRACEPARENT_KEY)
    tracestate = inputs.pop(TRACESTATE_KEY, "")
    if not isinstance(traceparent, str):
        return None
    return traceparent, tracestate if isinstance(tracestate, str) else ""


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of ``tracing.otlp_endpoint``: as given when it has a path,
    else with the standard ``/v1/traces``."""
    if urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def service_name(settings: TracingSettings, kind: str) -> str:
    """The ``service.name`` of a daemon's spans: the setting, else ``zeroserve-<kind>``."""
    return settings.service_name or f"zeroserve-{kind}"


@overload
def start_tracing(settings: TracingSettings, kind: Literal["gateway"]) -> GatewayTracer | None:
    ...


@overload
def start_tracing(settings: TracingSettings, kind: Literal["broker"]) -> BrokerTracer | None:
    ...


@overload
def start_tracing(settings: TracingSettings, kind: Literal["worker"]) -> WorkerTracer | None:
    ...


def start_tracing(settings: TracingSettings, kind: str) -> DaemonTracer | None:
    """The tracer of a daemon of ``kind`` (``gateway``, ``broker`` or ``worker``: the
    :mod:`zeroserve.tracing.spans` class of that daemon), exporting to
    ``settings.otlp_endpoint``; None when tracing is off. It is also the process's global
    tracer provider, so that a service's own spans (``opentelemetry.trace.get_tracer``) are
    exported with the worker's. Raises :class:`TracingError` when it cannot start."""
    if not settings.otlp_endpoint:
        return None
    if not 0.0 <= settings.sample_ratio <= 1.0:
        raise TracingError(f"tracing.sample_ratio must be within 0..1, got "
                           f"{settings.sample_ratio}")
    try:
        from zeroserve.tracing import spans
    except ImportError as exc:
        raise TracingError(f"tracing.otlp_endpoint is set but the OpenTelemetry SDK cannot "
                           f"be imported ({exc}): {INSTALL_HINT}") from None
    return spans.start(kind, service_name(settings, kind), traces_url(settings.otlp_endpoint),
                       settings.sample_ratio)
