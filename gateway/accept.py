"""Accepting HTTP connections without letting clients exhaust the gateway.

tornado's accept handler raises on EMFILE/ENFILE and is called again at once,
because the waiting connection keeps the listening socket readable: the
gateway spins, logging a traceback each time. :class:`AcceptLoop` instead
stops watching the listening socket for a short pause and tries again; the
kernel's backlog holds the waiting connections meanwhile.

:class:`GatewayHTTPServer` serves the gateway's tornado application on that loop, one
:class:`~gateway.http_connection.HttpConnection` per connection, with a bound on open
connections (past it a new connection is closed at once), TLS when given an
``ssl_context``, and deadlines: a connection waiting for a request is closed after
``idle_timeout_s``; from a request's first byte, its headers must arrive within
``header_timeout_s``; from its headers, its body within ``body_timeout_s``. One periodic
sweep checks them all, where a timer per request would cost on every request.

Events that a client can cause many times a second are logged through
:class:`EventReport`: once, then at most once per interval, with a count.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tornado import httputil
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.netutil import bind_sockets

from gateway.http_connection import ConnectionSettings, HttpConnection, Phase, RequestContext

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


class GatewayHTTPServer:
    """The gateway's HTTP/1.1 server: ``app`` (tornado's ``web.Application``) served on
    :class:`~gateway.http_connection.HttpConnection`s accepted by :class:`AcceptLoop`, at most
    ``max_connections`` open, TLS when given ``ssl_context``, and the header, idle and body
    timeouts of :class:`ConnectionLimits` checked by one periodic sweep."""

    def __init__(self, app: httputil.HTTPServerConnectionDelegate, limits: ConnectionLimits,
                 settings: ConnectionSettings, ssl_context: ssl.SSLContext | None = None,
                 handshake_failures: Callable[[Any, BaseException], None] | None = None
                 ) -> None:
        self.app = app
        self.limits = limits
        self.settings = settings
        self.ssl_context = ssl_context
        self.handshake_failures = handshake_failures
        self.refused = EventReport(5.0)
        self.header_timeouts = EventReport(5.0)
        self.body_timeouts = EventReport(5.0)
        self._accepting: list[tuple[AcceptLoop, socket.socket]] = []
        self._connections: set[HttpConnection] = set()
        self._starting: set[asyncio.Task] = set()  # connections in their TLS handshake
        shortest_s = min(limits.idle_timeout_s, limits.header_timeout_s, limits.body_timeout_s)
        sweep_s = min(max(shortest_s / 4, 0.05), 1.0)
        self._sweep = PeriodicCallback(self._close_overdue, sweep_s * 1000)
        self._sweep.start()

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed (those in their TLS handshake included)."""
        return len(self._connections)

    def listen(self, port: int, address: str = "", reuse_port: bool = False) -> None:
        """Bind ``address:port`` and accept on it."""
        self.add_sockets(bind_sockets(port, address=address, reuse_port=reuse_port))

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

    async def close_all_connections(self) -> None:
        """Close every open connection, and return once they are closed."""
        for task in list(self._starting):
            task.cancel()
        for connection in list(self._connections):
            connection.close()
        for _ in range(100):
            if not self._connections and not self._starting:
                return
            await asyncio.sleep(0.01)

    def _accepted(self, connection: socket.socket, address: Any) -> None:
        if self.open_connections >= self.limits.max_connections:
            connection.close()
            count = self.refused.note(time.monotonic())
            if count is not None:
                log.warning("gateway: %d HTTP connections closed at once: %d are open, the "
                            "limit (gateway.max_connections)", count, self.open_connections)
            return
        served = HttpConnection(self.app, self.settings,
                                RequestContext(address, self.ssl_context is not None),
                                self._lost)
        self._connections.add(served)
        start = asyncio.get_running_loop().create_task(self._start(connection, address, served))
        self._starting.add(start)
        start.add_done_callback(self._starting.discard)

    async def _start(self, connection: socket.socket, address: Any,
                     served: HttpConnection) -> None:
        """Hand the socket to ``served``, after the TLS handshake if TLS is on."""
        loop = asyncio.get_running_loop()
        tls = self.ssl_context
        try:
            await loop.connect_accepted_socket(
                lambda: served, connection, ssl=tls,
                ssl_handshake_timeout=self.limits.header_timeout_s if tls else None)
        except (OSError, asyncio.CancelledError) as exc:  # a failed or cut-short handshake
            connection.close()
            if served.made:
                return  # served.connection_lost has removed it
            self._lost(served)
            if self.handshake_failures is not None and isinstance(exc, OSError):
                self.handshake_failures(address, exc)

    def _lost(self, connection: HttpConnection) -> None:
        self._connections.discard(connection)

    def _close_overdue(self) -> None:
        """Close every connection that waited for its next request, or whose headers or body
        took, longer than their timeout (from when the server began to wait for a request;
        from the request's first byte; from the end of its headers)."""
        now = time.monotonic()
        limits = self.limits
        late = {Phase.IDLE: now - limits.idle_timeout_s,
                Phase.HEADERS: now - limits.header_timeout_s,
                Phase.BODY: now - limits.body_timeout_s}
        overdue = [c for c in self._connections if c.waiting() and c.since < late[c.phase]]
        for connection in overdue:
            connection.close()
            if connection.phase is Phase.IDLE:
                continue  # a kept-alive connection left unused: nothing to report
            report, what, limit = \
                (self.header_timeouts, "headers", limits.header_timeout_s) \
                if connection.phase is Phase.HEADERS else \
                (self.body_timeouts, "body", limits.body_timeout_s)
            count = report.note(now)
            if count is not None:
                log.info("gateway: closed %d HTTP connections whose %s took over %.1f s",
                         count, what, limit)
