"""One HTTP/1.1 connection of the gateway: an :class:`asyncio.BufferedProtocol` that parses requests
with httptools (llhttp, in C) and hands each to tornado's ``web.Application``, whose routes and
handlers are unchanged.

tornado's own ``HTTP1Connection`` reads through an ``IOStream``, parses headers in Python and
waits on several futures per request: about 100 µs of CPU per request on the benchmark machine,
a third of the gateway's (docs/benchmarks.md, round 4). This class is the
``httputil.HTTPConnection`` that tornado's handlers write to, and it keeps what clients see of
tornado's:

- HTTP/1.1 connections are kept alive unless the request says ``Connection: close``; HTTP/1.0
  ones only when it says ``Connection: keep-alive``;
- requests on one connection are answered one at a time, in order: a pipelined request waits,
  parsed, until the answer before it is written;
- ``Expect: 100-continue`` is answered ``100 (Continue)`` once the handler has accepted the
  headers; a gzip-encoded body is inflated (``X-Consumed-Content-Encoding`` names it), at most
  ``chunk_size`` bytes at a time;
- an answer without a Content-Length goes out chunked (HTTP/1.1) or ends the connection;
- a request that does not parse, whose headers pass ``max_header_size`` or whose body passes
  ``max_body_size`` is answered 400 (431 for the headers) and its connection closed;
- a write returns a future that is done when the bytes have left for the kernel (a slow
  reader holds it), failing with ``StreamClosedError`` once the client is gone;
- a plain body of a declared length of 1 MiB or more is read from the socket straight into
  one buffer, which the delegate gets whole (a ``memoryview``), instead of as the parser's
  pieces that it would join: two copies fewer. The buffer is allocated and not written
  (``numpy.empty``), so a length declared and not sent costs no memory, and the memory of
  the bodies before it is reused (a fresh mapping per body cost a page fault per 4 KiB);
- a client that leaves during its request's body is told to the delegate
  (``on_connection_close``), one that leaves while its answer is computed to the handler's
  close callback.

The connection notes its :class:`Phase` and since when, for the server's sweep of deadlines
(:class:`gateway.accept.GatewayHTTPServer`).
"""
from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import httptools
import numpy as np
from tornado import httputil
from tornado.iostream import StreamClosedError

log = logging.getLogger("zeroserve.gateway")
app_log = logging.getLogger("tornado.application")

_CONTINUE_LINE = b"HTTP/1.1 100 (Continue)\r\n\r\n"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_MAX_QUEUED_BODY_BYTES = 1 << 20  # parsed and not yet taken by the delegate: stop reading
# the most handed to the transport at once: what the socket does not take of it is copied into
# the transport's buffer, so a larger answer waits in the backlog, as views, until it drains
_WRITE_SLICE_BYTES = 256 * 1024
_READ_BYTES = 256 * 1024  # the most one read takes, outside a sized body (asyncio's own limit)
# one read buffer per thread, shared by its connections: the loop fills it and the parser
# consumes it (copying what it keeps) within one callback, so none holds 256 KiB while idle
_scratch = threading.local()
_SINK_AT_BYTES = 1 << 20  # a plain body declaring this many bytes or more is read into one buffer


class Phase(enum.Enum):
    """Where a connection's current request is, for its deadlines."""

    IDLE = 0      # no request being read: between requests, or its body is all in
    HEADERS = 1   # a request's first byte came, its headers have not all
    BODY = 2      # the headers came, the body has not all


@dataclass(frozen=True)
class ConnectionSettings:
    """The limits of one request (bytes)."""

    max_body_size: int
    chunk_size: int = 64 * 1024  # the most one piece of a gzip body inflates to at once
    max_header_size: int = 64 * 1024  # tornado's default


class RequestContext:
    """What a request knows of its connection (tornado's ``HTTPServerRequest`` reads
    ``remote_ip`` and ``protocol`` from it)."""

    def __init__(self, address: Any, tls: bool) -> None:
        self.remote_ip = address[0] if isinstance(address, tuple) and address else "0.0.0.0"
        self.protocol = "https" if tls else "http"

    def __str__(self) -> str:
        return self.remote_ip


class _Refused(Exception):
    """A request the connection answers itself, with ``status``, and then closes."""

    def __init__(self, why: str, status: bytes = b"400 Bad Request") -> None:
        super().__init__(why)
        self.status = status


# the parser's events, queued until the request before them is answered
_HEADERS, _CONTINUE_EVENT, _BODY, _END, _REFUSED = range(5)


def _read_buffer() -> memoryview:
    view: memoryview | None = getattr(_scratch, "view", None)
    if view is None:
        view = _scratch.view = memoryview(bytearray(_READ_BYTES))
    return view


class HttpConnection(asyncio.BufferedProtocol, httputil.HTTPConnection):
    """An HTTP/1.1 server connection serving ``app``; ``on_lost`` is called once, when it
    closes."""

    def __init__(self, app: httputil.HTTPServerConnectionDelegate,
                 settings: ConnectionSettings, context: RequestContext,
                 on_lost: Callable[[HttpConnection], None]) -> None:
        self.context = context
        self.phase = Phase.IDLE
        self.since = time.monotonic()
        self._app = app
        self._settings = settings
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        # a sized body read straight into its buffer (None: reads go to the parser)
        self._sink: memoryview | None = None
        self._sink_filled = 0
        self._closed = False
        self._discarding = False  # what the client sends from here on is not read
        self._reading_paused = False
        self._events: deque[tuple[int, Any]] = deque()
        self._queued_body_bytes = 0
        self._blocked = False  # on a delegate's future, or on the answer to the last request
        self._writing_paused = False
        self._drained: list[asyncio.Future[None]] = []
        self._finish_when_drained = False
        self._backlog: deque[memoryview] = deque()  # written, not yet handed to the transport
        # the request being parsed
        self._url = b""
        self._headers = httputil.HTTPHeaders()
        self._header_bytes = 0
        self._body_bytes = 0
        # the request being answered
        self._delegate: httputil.HTTPMessageDelegate | None = None
        self._start_line: httputil.RequestStartLine | None = None
        self._request_headers: httputil.HTTPHeaders | None = None
        self._inflater: Any = None
        self._inflated_bytes = 0
        self._disconnect_on_finish = False
        self._read_finished = False
        self._headers_written = False
        self._write_finished = False
        self._chunking_output = False
        self._expected_remaining: int | None = None
        self._close_callback: Callable[[], None] | None = None

    @property
    def made(self) -> bool:
        """Whether the connection has begun (after its TLS handshake, if any)."""
        return self._transport is not None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        # paused while anything waits to be sent; 1, not 0: asyncio's TLS transport pauses at
        # a buffer of high or more, so at 0 it would pause on every write, empty or not
        self._transport.set_write_buffer_limits(high=1)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._sink is not None:
            return self._sink[self._sink_filled:]
        return _read_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        if self._sink is None:
            self.data_received(_read_buffer()[:nbytes])
            return
        self._sink_filled += nbytes
        if self._sink_filled == len(self._sink):
            self._end_sink()
            self._parser = httptools.HttpRequestParser(self)  # the next request's
            self._pump()
            self._pause_if_queued()

    def data_received(self, data: bytes | memoryview) -> None:
        """Parse ``data`` (what one read brought)."""
        if self._discarding:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._discarding = True  # no protocol is switched to: answer, then close
            self._disconnect_on_finish = True
        except httptools.HttpParserError as exc:
            self._refuse(_Refused(str(exc.__context__ or exc)))
        if self._discarding:
            self._sink = None
        self._pump()
        self._pause_if_queued()

    def _pause_if_queued(self) -> None:
        if self._queued_body_bytes > _MAX_QUEUED_BODY_BYTES and not self._reading_paused \
                and self._transport is not None:
            self._reading_paused = True  # the delegate is slower than the client
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # the client is done: close, as tornado does

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._events.clear()
        self._backlog.clear()
        self._fail_drained()
        delegate, self._delegate = self._delegate, None
        if delegate is not None and not self._read_finished:
            self._quietly(delegate.on_connection_close)
        elif self._close_callback is not None:
            callback, self._close_callback = self._close_callback, None
            self._quietly(callback)
        self._on_lost(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._write_backlog()
        if self._unsent:
            return
        drained, self._drained = self._drained, []
        for future in drained:
            if not future.done():
                future.set_result(None)
        if self._finish_when_drained:
            self._finish_when_drained = False
            self._finish_request()

    # httptools' parser callbacks

    def on_message_begin(self) -> None:
        self.phase, self.since = Phase.HEADERS, time.monotonic()
        self._url = b""
        self._headers = httputil.HTTPHeaders()
        self._header_bytes = 0
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        self._headers.add(name.decode("latin1"), value.decode("latin1").strip(" \t"))

    def on_headers_complete(self) -> None:
        if self._discarding:
            return
        self.phase, self.since = Phase.BODY, time.monotonic()
        start_line = httputil.RequestStartLine(
            self._parser.get_method().decode("latin1"), self._url.decode("latin1"),
            "HTTP/" + self._parser.get_http_version())
        headers = self._headers
        self._events.append((_HEADERS, (start_line, headers)))
        declared = headers.get("Content-Length")
        length = None if declared is None else int(declared)
        if length is not None and length > self._settings.max_body_size:
            self._refuse(_Refused("Content-Length too long"))
            return
        if headers.get("Expect") == "100-continue":
            self._events.append((_CONTINUE_EVENT, None))
        if length is not None and length >= _SINK_AT_BYTES \
                and "Transfer-Encoding" not in headers and "Content-Encoding" not in headers:
            self._sink, self._sink_filled = np.empty(length, np.uint8).data, 0

    def on_body(self, body: bytes) -> None:
        if self._discarding:
            return
        if self._sink is not None:  # this read's part of a sized body: the rest comes straight
            self._sink[self._sink_filled:self._sink_filled + len(body)] = body
            self._sink_filled += len(body)
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._settings.max_body_size:
            self._refuse(_Refused("chunked body too large"))
        else:
            self._queued_body_bytes += len(body)
            self._events.append((_BODY, body))

    def on_message_complete(self) -> None:
        if self._discarding:
            return
        if self._sink is not None:  # the whole body came in one read
            self._end_sink()
            return
        self.phase = Phase.IDLE
        self._events.append((_END, None))

    def _end_sink(self) -> None:
        """The sized body is in: queue it, whole, and the request's end."""
        body, self._sink = self._sink, None
        assert body is not None
        self._queued_body_bytes += len(body)
        self.phase = Phase.IDLE
        self._events.extend(((_BODY, body), (_END, None)))

    # httputil.HTTPConnection, for tornado's handlers

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        """Run ``callback`` if the client leaves before the answer is finished."""
        self._close_callback = callback

    def write_headers(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                      headers: httputil.HTTPHeaders, chunk: bytes | None = None
                      ) -> asyncio.Future[None]:
        """Write the answer's status line and headers, and ``chunk`` of its body if given."""
        assert isinstance(start_line, httputil.ResponseStartLine)
        request, request_headers = self._start_line, self._request_headers
        assert request is not None and request_headers is not None
        code = start_line.code
        version_11 = request.version == "HTTP/1.1"
        self._chunking_output = (version_11 and request.method != "HEAD"
                                 and code not in (204, 304) and not 100 <= code < 200
                                 and "Content-Length" not in headers)
        if version_11 and self._disconnect_on_finish:
            headers["Connection"] = "close"
        if request.version == "HTTP/1.0" \
                and request_headers.get("Connection", "").lower() == "keep-alive":
            headers["Connection"] = "Keep-Alive"
        if self._chunking_output:
            headers["Transfer-Encoding"] = "chunked"
        if request.method == "HEAD" or code == 304:
            self._expected_remaining = 0
        elif "Content-Length" in headers:
            self._expected_remaining = int(headers["Content-Length"])
        else:
            self._expected_remaining = None
        lines = [f"HTTP/1.1 {code} {start_line.reason}"]
        lines.extend(f"{name}: {value}" for name, value in headers.get_all())
        head = "\r\n".join(lines)
        if head.count("\n") != len(lines) - 1 or head.count("\r") != len(lines) - 1:
            raise ValueError(f"Illegal characters (CR or LF) in header: {head!r}")
        self._headers_written = True
        data = head.encode("latin1") + b"\r\n\r\n"
        return self._send(data, *self._framed(chunk)) if chunk else self._send(data)

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        """Write a piece of the answer's body."""
        return self._send(*self._framed(chunk))

    def finish(self) -> None:
        """The answer is complete."""
        if self._expected_remaining and not self._closed:
            self._close()
            raise httputil.HTTPOutputError(
                f"Tried to write {self._expected_remaining} bytes less than Content-Length")
        if self._chunking_output and not self._closed:
            self._send(b"0\r\n\r\n")
        self._write_finished = True
        if not self._read_finished:
            self._disconnect_on_finish = True  # the rest of the body is not read
        if self._unsent and not self._closed:
            self._finish_when_drained = True
        else:
            self._finish_request()

    # the server's

    def waiting(self) -> bool:
        """Whether a deadline applies now: the connection is open and waits on the client
        (not while an answer is computed or written after the body came)."""
        if self._closed or self._reading_paused:
            return False
        return self.phase is not Phase.IDLE or (self._start_line is None and not self._events)

    def close(self) -> None:
        """Close the connection now, dropping whatever is still to be sent."""
        if self._transport is not None and not self._closed:
            self._transport.abort()

    # the queue of events

    def _pump(self) -> None:
        while self._events and not self._blocked and not self._closed:
            kind, value = self._events.popleft()
            if kind == _BODY:
                self._queued_body_bytes -= len(value)
            try:
                waits = self._dispatch(kind, value)
            except _Refused as refused:
                self._answer_refused(refused)
                return
            except Exception:
                app_log.error("Uncaught exception", exc_info=True)
                self._close()
                return
            if waits is not None:
                self._wait_for(waits)
        if self._reading_paused and not self._events and self._transport is not None \
                and not self._closed:
            self._reading_paused = False
            self._transport.resume_reading()

    def _dispatch(self, kind: int, value: Any) -> Awaitable[Any] | None:
        if kind == _HEADERS:
            return self._begin(*value)
        if kind == _BODY:
            return self._body(value)
        if kind == _END:
            self._end()
            return None
        if kind == _CONTINUE_EVENT:
            if not self._write_finished:
                self._send(_CONTINUE_LINE)
            return None
        raise value  # _REFUSED

    def _wait_for(self, waits: Awaitable[Any]) -> None:
        future = asyncio.ensure_future(waits)
        if future.done():
            self._waited(future, resume=False)
            return
        self._blocked = True
        future.add_done_callback(self._waited)

    def _waited(self, future: asyncio.Future[Any], resume: bool = True) -> None:
        if future.cancelled() or future.exception() is not None:
            if not future.cancelled():
                app_log.error("Uncaught exception", exc_info=future.exception())
            self._close()
            return
        if resume:
            self._blocked = False
            self._pump()

    def _begin(self, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders
               ) -> Awaitable[Any] | None:
        self._start_line, self._request_headers = start_line, headers
        self._disconnect_on_finish = self._disconnect_on_finish or \
            not _can_keep_alive(start_line, headers)
        self._read_finished = self._headers_written = self._write_finished = False
        self._chunking_output = False
        self._expected_remaining = None
        self._inflater = None
        self._inflated_bytes = 0
        if headers.get("Content-Encoding", "").lower() == "gzip":
            self._inflater = zlib.decompressobj(_GZIP_WBITS)
            headers.add("X-Consumed-Content-Encoding", headers["Content-Encoding"])
            del headers["Content-Encoding"]
        self._delegate = self._app.start_request(self, self)
        return self._delegate.headers_received(start_line, headers)

    def _body(self, chunk: bytes) -> Awaitable[Any] | None:
        if self._write_finished or self._delegate is None:
            return None
        if self._inflater is None:
            return self._delegate.data_received(chunk)
        waits = []
        while chunk:
            try:
                inflated = self._inflater.decompress(chunk, self._settings.chunk_size)
            except zlib.error as exc:
                raise _Refused(f"invalid gzip data: {exc}") from None
            tail = self._inflater.unconsumed_tail
            if not inflated and len(tail) >= len(chunk):
                raise _Refused("encountered unconsumed gzip data without making progress")
            if inflated:
                self._inflated_bytes += len(inflated)
                if self._inflated_bytes > self._settings.max_body_size:
                    raise _Refused("decompressed body too large")
                pending = self._delegate.data_received(inflated)
                if pending is not None:
                    waits.append(pending)
            chunk = tail
        return asyncio.gather(*waits) if waits else None

    def _end(self) -> None:
        if self._inflater is not None:
            try:
                self._inflater.flush()
            except zlib.error as exc:
                raise _Refused(f"invalid gzip data: {exc}") from None
        self._read_finished = True
        if self._delegate is not None and not self._write_finished:
            self._blocked = True  # until the answer is finished
            self._delegate.finish()

    def _finish_request(self) -> None:
        self._close_callback = None
        if self._disconnect_on_finish:
            self._close()  # the delegate hears of it if its body was not all read
            return
        self._delegate = None
        self._start_line = self._request_headers = None
        self._headers_written = False
        self.since = time.monotonic()  # the idle time runs from here
        if self._blocked:
            self._blocked = False
            if self._events:
                asyncio.get_running_loop().call_soon(self._pump)

    def _refuse(self, refused: _Refused) -> None:
        """Queue a refusal: the requests before it are answered first."""
        self._discarding = True
        self._events.append((_REFUSED, refused))

    def _answer_refused(self, refused: _Refused) -> None:
        log.info("gateway: malformed HTTP request from %s: %s", self.context, refused)
        if not self._headers_written:
            self._send(b"HTTP/1.1 " + refused.status + b"\r\nContent-Length: 0\r\n"
                       b"Connection: close\r\n\r\n")
        self._close()

    # writing and closing

    def _framed(self, chunk: bytes) -> tuple[bytes, ...]:
        """``chunk`` as its pieces on the wire (a chunked answer's frame around it)."""
        if self._expected_remaining is not None:
            self._expected_remaining -= len(chunk)
            if self._expected_remaining < 0:
                self._close()
                raise httputil.HTTPOutputError("Tried to write more data than Content-Length")
        if self._chunking_output and chunk:
            return b"%x\r\n" % len(chunk), chunk, b"\r\n"
        return (chunk,)

    def _send(self, *pieces: bytes | memoryview) -> asyncio.Future[None]:
        """Write ``pieces`` in order: joined, when they are small together; else as views,
        a slice at a time as the socket takes them (:meth:`_write_backlog`). The future
        resolves once everything is handed to the socket."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed or self._transport is None or self._transport.is_closing():
            future.set_exception(StreamClosedError())
            future.exception()  # a caller that does not wait for it is not warned
            return future
        size = sum(map(len, pieces))
        if size > _WRITE_SLICE_BYTES or self._backlog:
            self._backlog.extend(memoryview(piece).cast("B") for piece in pieces if len(piece))
            self._write_backlog()
        elif size:
            self._transport.write(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        if self._unsent:
            self._drained.append(future)
        else:
            future.set_result(None)
        return future

    @property
    def _unsent(self) -> bool:
        """Whether something written is not yet with the kernel (in the backlog or in the
        transport's buffer)."""
        return self._writing_paused or bool(self._backlog)

    def _write_backlog(self) -> None:
        """Hand the backlog to the transport a slice at a time while the socket takes it all
        (the transport pauses this protocol when it does not)."""
        backlog, transport = self._backlog, self._transport
        while backlog and not self._writing_paused and transport is not None:
            piece = backlog.popleft()
            if len(piece) > _WRITE_SLICE_BYTES:
                backlog.appendleft(piece[_WRITE_SLICE_BYTES:])
                piece = piece[:_WRITE_SLICE_BYTES]
            transport.write(piece)

    def _fail_drained(self) -> None:
        drained, self._drained = self._drained, []
        for future in drained:
            if not future.done():
                future.set_exception(StreamClosedError())
                future.exception()

    def _close(self) -> None:
        """Close once what was written is sent."""
        self._discarding = True
        self._events.clear()
        self._sink = None
        if self._transport is not None and not self._transport.is_closing():
            while self._backlog:  # the transport sends its buffer before it closes
                self._transport.write(self._backlog.popleft())
            self._transport.close()

    @staticmethod
    def _quietly(callback: Callable[[], Any]) -> None:
        try:
            callback()
        except Exception:
            app_log.error("Uncaught exception in a close callback", exc_info=True)

    def _count_header_bytes(self, count: int) -> None:
        self._header_bytes += count
        if self._header_bytes > self._settings.max_header_size and not self._discarding:
            self._refuse(_Refused("headers too large", b"431 Request Header Fields Too Large"))


def _can_keep_alive(start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders
                    ) -> bool:
    """Whether the connection stays open after this request's answer (tornado's rules)."""
    connection = headers.get("Connection", "").lower()
    if start_line.version == "HTTP/1.1":
        return connection != "close"
    if "Content-Length" in headers or "chunked" in headers.get("Transfer-Encoding", "").lower() \
            or start_line.method in ("HEAD", "GET"):
        return connection == "keep-alive"
    return False
