"""Accepting HTTP connections without letting clients exhaust the gateway.

tornado's accept handler raises on EMFILE/ENFILE and is called again at once,
because the waiting connection keeps the listening socket readable: the
gateway spins, logging a traceback each time. :class:`AcceptLoop` instead
stops watching the listening socket for a short pause and tries again; the
kernel's backlog holds the waiting connections meanwhile.

:class:`GatewayHTTPServer` is tornado's HTTPServer with that loop, a bound on
open connections (past it a new connection is closed at once), TLS when given
``ssl_options`` (as on tornado's own accept path), and its own deadlines: a
connection waiting for a request is closed after ``idle_timeout_s``; from a
request's first byte, its headers must arrive within ``header_timeout_s``; from
its headers, its body within ``body_timeout_s``. One periodic sweep checks them
all, where tornado's own idle and body timeouts cost a timer and a wrapped
future per request.

Events that a client can cause many times a second are logged through
:class:`EventReport`: once, then at most once per interval, with a count.
"""
from __future__ import annotations

import enum
import errno
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tornado import httputil, iostream
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.netutil import ssl_wrap_socket

log = logging.getLogger("zeroserve.gateway")

OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_ACCEPTS_PER_WAKEUP = 128  # tornado's figure: how many waiting connections one wake-up takes


@dataclass(frozen=True)
class ConnectionLimits:
    """How long an HTTP connection may take, and how many may be open (seconds, a count)."""

    header_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    body_timeout_s: float = 60.0
    max_connections: int = 10_000
    accept_pause_s: float = 0.25


class EventReport:
    """Counts one kind of event and says when to log it: at the first, then at most once
    per ``interval_s``, with how many happened since the last line (pure; clock passed in)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.total = 0
        self._unreported = 0
        self._last: float | None = None

    def note(self, now: float) -> int | None:
        """Count one event at ``now``; the count to log now, or None to stay quiet."""
        self.total += 1
        self._unreported += 1
        if self._last is not None and now - self._last < self.interval_s:
            return None
        self._last, count, self._unreported = now, self._unreported, 0
        return count


class AcceptLoop:
    """Accepts connections on a listening socket and hands each to ``on_connection``; out of
    file descriptors, it stops watching the socket for ``pause_s`` and logs through an
    :class:`EventReport` instead of raising."""

    def __init__(self, sock: socket.socket, on_connection: Callable[[socket.socket, Any], None],
                 pause_s: float, report_interval_s: float = 5.0) -> None:
        self.sock = sock
        self.on_connection = on_connection
        self.pause_s = pause_s
        self.pauses = EventReport(report_interval_s)
        self._loop = IOLoop.current()
        self._watching = False
        self._stopped = False
        self._resume: object | None = None

    def start(self) -> None:
        self._watching = True
        self._loop.add_handler(self.sock, self._ready, IOLoop.READ)

    def stop(self) -> None:
        """Stop accepting for good (the socket stays open; its owner closes it)."""
        self._stopped = True
        if self._resume is not None:
            self._loop.remove_timeout(self._resume)
            self._resume = None
        if self._watching:
            self._loop.remove_handler(self.sock)
            self._watching = False

    def _ready(self, fd: Any, events: int) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            if self._stopped or not self._watching:
                return
            try:
                connection, address = self.sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in OUT_OF_DESCRIPTORS:
                    raise
                self._pause(exc)
                return
            self.on_connection(connection, address)

    def _pause(self, exc: OSError) -> None:
        self._loop.remove_handler(self.sock)
        self._watching = False
        self._resume = self._loop.call_later(self.pause_s, self._unpause)
        count = self.pauses.note(time.monotonic())
        if count is not None:
            log.warning("gateway: cannot accept HTTP connections (%s); pausing accepts for "
                        "%.2f s each time, %d pauses since the last report", exc.strerror,
                        self.pause_s, count)

    def _unpause(self) -> None:
        self._resume = None
        if not self._stopped:
            self.start()


class _Phase(enum.Enum):
    IDLE = 0      # between requests: idle while the server waits for the next one
    HEADERS = 1   # a request's first byte came, its headers have not all
    BODY = 2      # the headers came, the body has not all


class _DeadlineStream(iostream.IOStream):
    """An IOStream that notes where its current request is (:class:`_Phase`) and since when;
    the server's sweep closes it when a phase outlasts its timeout. Noting costs a clock read
    per phase, not a timer per request."""

    def __init__(self, sock: socket.socket, **kwargs: Any) -> None:
        super().__init__(sock, **kwargs)
        self.phase = _Phase.IDLE
        self.since = 0.0
        self._awaiting_headers = False

    def await_headers(self) -> None:
        """The server begins to wait for a request (the idle timeout runs from now)."""
        self._awaiting_headers = True
        self.since = time.monotonic()

    def waiting(self) -> bool:
        """Whether a timeout applies now: the stream is open and the server waits on the
        client (not, say, while an answer is computed or streamed after the body came)."""
        return not self.closed() and (self.phase is not _Phase.IDLE or self._awaiting_headers)

    def headers_arrived(self) -> None:
        self._awaiting_headers = False
        self.phase, self.since = _Phase.BODY, time.monotonic()

    def request_read(self) -> None:
        self.phase = _Phase.IDLE

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        count = super().read_from_fd(buf)
        if count and self._awaiting_headers and self.phase is _Phase.IDLE:
            self.phase, self.since = _Phase.HEADERS, time.monotonic()
        return count


class _TlsDeadlineStream(_DeadlineStream, iostream.SSLIOStream):
    """:class:`_DeadlineStream` over TLS; the handshake runs on the first reads."""


class _PhaseNotes(httputil.HTTPMessageDelegate):
    """Passes a request through, telling its stream when the headers and the body are in."""

    def __init__(self, delegate: httputil.HTTPMessageDelegate,
                 stream: _DeadlineStream) -> None:
        self.delegate = delegate
        self.stream = stream

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> Any:
        self.stream.headers_arrived()
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        self.stream.request_read()
        self.delegate.finish()

    def on_connection_close(self) -> None:
        self.delegate.on_connection_close()


class GatewayHTTPServer(HTTPServer):
    """tornado's HTTPServer with :class:`AcceptLoop`, at most ``max_connections`` open
    connections, and the header, idle and body timeouts of :class:`ConnectionLimits`."""

    def initialize(self, app: Any, limits: ConnectionLimits,  # type: ignore[override]
                   **kwargs: Any) -> None:
        # tornado's Configurable calls initialize, not __init__
        super().initialize(app, **kwargs)
        self.conn_params.header_timeout = None  # the idle timeout is the sweep's (tornado: 1 h)
        self.limits = limits
        self.open_connections = 0
        self.refused = EventReport(5.0)
        self.header_timeouts = EventReport(5.0)
        self.body_timeouts = EventReport(5.0)
        self._accepting: list[tuple[AcceptLoop, socket.socket]] = []
        self._streams: set[_DeadlineStream] = set()
        shortest_s = min(limits.idle_timeout_s, limits.header_timeout_s, limits.body_timeout_s)
        sweep_s = min(max(shortest_s / 4, 0.05), 1.0)
        self._sweep = PeriodicCallback(self._close_overdue, sweep_s * 1000)
        self._sweep.start()

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            accept = AcceptLoop(sock, self._accepted, self.limits.accept_pause_s)
            accept.start()
            self._accepting.append((accept, sock))

    def stop(self) -> None:
        """Stop accepting and close the listening sockets; open connections stay."""
        self._sweep.stop()
        for accept, sock in self._accepting:
            accept.stop()
            sock.close()
        self._accepting.clear()

    def _accepted(self, connection: socket.socket, address: Any) -> None:
        if self.open_connections >= self.limits.max_connections:
            connection.close()
            count = self.refused.note(time.monotonic())
            if count is not None:
                log.warning("gateway: %d HTTP connections closed at once: %d are open, the "
                            "limit (gateway.max_connections)", count, self.open_connections)
            return
        stream_class: type[_DeadlineStream] = _DeadlineStream
        if self.ssl_options is not None:  # tornado's own accept path does the same
            try:
                connection = ssl_wrap_socket(connection, self.ssl_options, server_side=True,
                                             do_handshake_on_connect=False)
            except OSError:  # the client went away at once (SSLError is an OSError)
                connection.close()
                return
            stream_class = _TlsDeadlineStream
        stream = stream_class(connection, max_buffer_size=self.max_buffer_size,
                              read_chunk_size=self.read_chunk_size)
        self._streams.add(stream)
        self.handle_stream(stream, address)

    def _close_overdue(self) -> None:
        """Close every connection that waited for its next request, or whose headers or body
        took, longer than their timeout (from when the server began to wait for a request;
        from the request's first byte; from the end of its headers)."""
        now = time.monotonic()
        limits = self.limits
        late = {_Phase.IDLE: now - limits.idle_timeout_s,
                _Phase.HEADERS: now - limits.header_timeout_s,
                _Phase.BODY: now - limits.body_timeout_s}
        overdue = [s for s in self._streams if s.waiting() and s.since < late[s.phase]]
        for stream in overdue:
            self._streams.discard(stream)
            stream.close()
            if stream.phase is _Phase.IDLE:
                continue  # a kept-alive connection left unused: nothing to report
            report, what, limit = \
                (self.header_timeouts, "headers", limits.header_timeout_s) \
                if stream.phase is _Phase.HEADERS else \
                (self.body_timeouts, "body", limits.body_timeout_s)
            count = report.note(now)
            if count is not None:
                log.info("gateway: closed %d HTTP connections whose %s took over %.1f s",
                         count, what, limit)

    def handle_stream(self, stream: iostream.IOStream, address: tuple) -> None:
        self.open_connections += 1
        super().handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        self.open_connections -= 1
        self._streams.discard(getattr(server_conn, "stream", None))  # type: ignore[arg-type]
        super().on_close(server_conn)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection
                      ) -> httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        stream = getattr(server_conn, "stream", None)
        if not isinstance(stream, _DeadlineStream):
            return delegate
        stream.await_headers()
        return _PhaseNotes(delegate, stream)
