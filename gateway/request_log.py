"""The gateway's request log: one JSON object per answered HTTP request, for an operator's
tools (``gateway.request_log_path``; off by default, sampled by ``gateway.request_log_sample``).

Each line holds ``time`` (UTC, ISO 8601 with milliseconds, when the answer was finished),
``request_id`` (the caller's ``X-Request-Id`` if it sent a sane one, else a fresh one),
``trace_id`` (from a W3C ``traceparent`` header; null without one), ``route`` (the metrics' route
label), ``method``, ``path`` (never the query string: a query may carry a key), ``service`` and
``endpoint`` (empty until a known endpoint was named), ``status``, ``duration_ms``, ``bytes_in``
(the body as sent: its Content-Length, else the bytes read), ``bytes_out`` (the body bytes
written, stream chunks included) and ``key`` (the name of the caller's API key, never the key;
null when keys are off or on a public path).
"""
from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import IO, Any

from zeroserve.config import GatewaySettings

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


@dataclass(frozen=True)
class RequestRecord:
    """One line of the request log (see the module's docstring for each field)."""

    time: str
    request_id: str
    trace_id: str | None
    route: str
    method: str
    path: str
    service: str
    endpoint: str
    status: int
    duration_ms: float
    bytes_in: int
    bytes_out: int
    key: str | None

    def to_line(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def utc_time(seconds: float) -> str:
    """``seconds`` since the epoch as ``2026-01-31T12:00:00.123Z``."""
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + \
        f".{int((seconds - whole) * 1000):03d}Z"


def request_id_of(sent: str | None) -> str:
    """The caller's request id when it is one (1-128 of ``[A-Za-z0-9._:-]``), else a new one."""
    return sent if sent and _REQUEST_ID.match(sent) else os.urandom(8).hex()


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` header (None without a valid one, or an all-zero
    id, which the standard forbids)."""
    found = _TRACEPARENT.match(traceparent.strip().lower()) if traceparent else None
    if found is None or found.group(1) == "0" * 32:
        return None
    return found.group(1)


def record_of(handler: Any, now_s: float) -> RequestRecord:
    """The record of a finished tornado handler of the gateway (a ``gateway.rest.BaseHandler``:
    its metric labels, identity and ``bytes_out``)."""
    request = handler.request
    declared = request.headers.get("Content-Length", "")
    read = getattr(handler, "_size", None)  # a BodyHandler counts the body as it arrives
    bytes_in = int(declared) if declared.isdigit() else read if read is not None \
        else len(request.body or b"")
    identity = getattr(handler, "identity", None)
    return RequestRecord(
        utc_time(now_s),
        getattr(handler, "request_id", None) or request_id_of(request.headers.get("X-Request-Id")),
        trace_id_of(request.headers.get("traceparent")),
        getattr(handler, "metric_route", "other"), request.method or "", request.path,
        getattr(handler, "metric_service", ""), getattr(handler, "metric_endpoint", ""),
        handler.get_status(), round(1000 * request.request_time(), 3), bytes_in,
        getattr(handler, "bytes_out", 0), identity.name if identity is not None else None)


class RequestLog:
    """Writes the record of a sampled share (``sample``, 0..1) of the requests, one line each.
    ``draw`` gives numbers in [0, 1) (random by default), ``clock`` seconds since the epoch."""

    def __init__(self, write: Callable[[str], Any], sample: float = 1.0,
                 draw: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.time) -> None:
        self.write = write
        self.sample = sample
        self.draw = draw
        self.clock = clock

    def sampled(self) -> bool:
        """Whether this request is one of the share that is logged."""
        return self.sample >= 1.0 or self.draw() < self.sample

    def record(self, handler: Any) -> None:
        """Log ``handler``'s request if it is sampled."""
        if self.sampled():
            self.write(record_of(handler, self.clock()).to_line() + "\n")


def open_request_log(gateway: GatewaySettings) -> RequestLog | None:
    """The request log the settings ask for: None while ``request_log_path`` is empty, the
    standard output for ``-``, else the file (appended to, a line at a time). OSError if the
    file cannot be opened; ValueError for a sample outside 0..1."""
    if not gateway.request_log_path:
        return None
    if not 0.0 <= gateway.request_log_sample <= 1.0:
        raise ValueError(f"gateway.request_log_sample must be within 0..1, got "
                         f"{gateway.request_log_sample}")
    out: IO[str] = sys.stdout if gateway.request_log_path == "-" else \
        open(gateway.request_log_path, "a", buffering=1, encoding="utf-8")

    def write(line: str) -> None:
        out.write(line)
        out.flush()  # whole lines, at once, for a reader that follows the file

    return RequestLog(write, gateway.request_log_sample)
