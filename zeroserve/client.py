"""A minimal client: ``Client("http://localhost:8000").call("mlp", "predict", x=array)``.

Numpy in, numpy out, over the REST route with msgpack bodies. The transport
is one small seam (:class:`HttpTransport`) so that other transports (gRPC)
can be added without touching :class:`Client`.
"""
from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from typing import Any

from zeroserve import codec

MSGPACK = "application/msgpack"


class ZeroserveError(Exception):
    """A call that the cluster answered with an error; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class BadRequest(ZeroserveError):
    """400: the inputs do not match the endpoint's schema."""


class NotFound(ZeroserveError):
    """404: no such service or endpoint."""


class ServerError(ZeroserveError):
    """500: the endpoint raised, or the cluster failed."""


class Overloaded(ZeroserveError):
    """503: no worker, or the queue is full; retry later."""


class DeadlineExceeded(ZeroserveError):
    """504: the deadline passed before the answer came."""


_ERRORS = {400: BadRequest, 404: NotFound, 503: Overloaded, 504: DeadlineExceeded}


def error_for(status: int, message: str) -> ZeroserveError:
    """The typed exception for an HTTP error status."""
    kind = _ERRORS.get(status, ServerError if status >= 500 else ZeroserveError)
    return kind(status, message)


class HttpTransport:
    """POSTs bodies to one gateway over a kept-alive connection per thread."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"expected an http://host:port URL, got {url!r}")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.prefix = parsed.path.rstrip("/")
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self._local.conn = conn
        return conn

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        """Return (status, content type, body); reconnects once if the connection dropped."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", self.prefix + path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.getheader("Content-Type", ""), resp.read()
            except (ConnectionError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class Client:
    """Calls a zeroserve cluster through one gateway. Thread-safe; usable as a context manager."""

    def __init__(self, url: str = "http://localhost:8000", timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._transport = HttpTransport(url, timeout + 5.0)

    def call(self, service: str, endpoint: str, *, timeout: float | None = None,
             **inputs: Any) -> Any:
        """Call ``service/endpoint`` with named inputs; return the endpoint's value.

        ``timeout`` (seconds) becomes the request's deadline in the cluster.
        Raises a :class:`ZeroserveError` subclass for every error answer.
        """
        meta, _ = codec.encode(inputs, threshold=1 << 62)
        headers = {"Content-Type": MSGPACK, "Accept": MSGPACK,
                   "X-Zeroserve-Timeout": str(timeout or self.timeout)}
        status, ctype, body = self._transport.post(f"/{service}/{endpoint}", meta, headers)
        if status == 200:
            return codec.decode(body) if ctype.startswith(MSGPACK) else json.loads(body)
        try:
            message = json.loads(body).get("error", body.decode(errors="replace"))
        except ValueError:
            message = body.decode(errors="replace")
        raise error_for(status, message)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
