"""The HTTP transports on httpx, sync and async: the REST route (msgpack) and the OIP HTTP
route (binary tensors) of one gateway at ``http://`` or ``https://host:port[/prefix]``.

The call's time bounds the whole exchange, the body included (httpx's own timeouts are per
read): the sync transport checks the time left after every chunk of the body, the async one
awaits the exchange under one timeout. A call is sent at most once: httpx reuses a kept-alive
connection only while it is idle and sound, and a broken exchange is never sent again here.

A stream asks the msgpack stream framing (:class:`~zeroserve.client.payloads.StreamFrames`):
its answer's headers come with its first chunk, so httpx's read timeout is the first chunk's
limit until they arrive, and the idle limit for every read after them.
"""
from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from typing import Any

import httpx

from zeroserve.client import operations as ops
from zeroserve.client import payloads
from zeroserve.client.errors import Unreachable, interrupted
from zeroserve.client.transport import SYSTEM_TLS, HttpAnswer, HttpRequest, Operation, Tls


def _httpx_options(url: str, api_key: str | None, tls: Tls) -> dict[str, Any]:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"expected an http(s)://host:port URL, got {url!r}")
    options: dict[str, Any] = {
        "base_url": url.rstrip("/"),
        "headers": {"Authorization": f"Bearer {api_key}"} if api_key else {},
        "limits": httpx.Limits(max_connections=None, max_keepalive_connections=100),
        "trust_env": False,  # no proxy from the environment between a client and its gateway
    }
    if parsed.scheme == "https":
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        options["verify"] = context
    return options


@contextlib.contextmanager
def _network_errors(url: str) -> Iterator[None]:
    """httpx's errors as the transport seam's: timeout, unreachable, or interrupted."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TimeoutError(f"no answer from {url} in time: {exc}") from None
    except httpx.ConnectError as exc:
        raise Unreachable(503, f"no gateway answered at {url}: {exc}") from None
    except httpx.TransportError as exc:  # after the request was (partly) written
        raise interrupted(f"{url}: {type(exc).__name__}: {exc}") from None


def _content(request: HttpRequest) -> tuple[Any, Mapping[str, str]]:
    """What httpx sends of ``request``, and with which headers: parts one after another,
    after the Content-Length of them all."""
    body = request.body
    if body is None or isinstance(body, bytes):
        return body, request.headers
    return list(body), {**request.headers, "Content-Length": str(sum(map(len, body)))}


async def _each(parts: list) -> AsyncIterator[Any]:
    for part in parts:  # (httpx's asyncio client takes parts from an async iterator only)
        yield part


def _within(deadline: float, chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        if time.monotonic() > deadline:
            raise TimeoutError("the answer did not arrive before the deadline")
        yield chunk


def _stream_request(service: str, endpoint: str, inputs: dict[str, Any], timeout_s: float,
                    idle_timeout_s: float | None) -> tuple[HttpRequest, httpx.Timeout]:
    """A stream's request and its httpx timeouts until its headers (its first chunk) come."""
    request = ops.stream_request(service, endpoint, inputs, timeout_s, idle_timeout_s)
    return request, httpx.Timeout(timeout_s + request.grace_s)


def _read_idle(response: httpx.Response, idle_timeout_s: float | None) -> None:
    """From now on each read of ``response`` waits at most the idle limit (with the gateway's
    grace, so that its own 504 event comes first; None: no limit of the client's own).
    httpcore takes the read timeout from the request's ``timeout`` extension when it starts
    reading the body, which is after the headers came."""
    timeouts = response.request.extensions.get("timeout")
    if isinstance(timeouts, dict):
        timeouts["read"] = None if idle_timeout_s is None else \
            idle_timeout_s + ops.GATEWAY_504_GRACE_S


def _stream_failure(response: httpx.Response, body: bytes) -> Exception:
    return payloads.http_error(response.status_code, body, response.headers.get("retry-after"))


def _stream_ended(frames: payloads.StreamFrames) -> bool:
    """Whether the stream ended (raises the error event that ended it)."""
    if frames.error is not None:
        raise frames.error
    return frames.done


_NO_END = "the stream ended without its end event"


class HttpTransport:
    """A pool of kept-alive connections to one gateway (thread-safe)."""

    def __init__(self, url: str, api_key: str | None = None, tls: Tls = SYSTEM_TLS) -> None:
        self.url = url
        self._client = httpx.Client(**_httpx_options(url, api_key, tls))

    def send(self, operation: Operation, timeout_s: float) -> Any:
        request = operation.http(timeout_s)
        content, headers = _content(request)
        deadline = time.monotonic() + timeout_s + request.grace_s
        with _network_errors(self.url), self._client.stream(
                request.method, request.path, content=content, headers=headers,
                timeout=deadline - time.monotonic()) as response:
            body = b"".join(_within(deadline, response.iter_bytes()))
        return operation.from_http(HttpAnswer(response.status_code, response.headers, body))

    def stream(self, service: str, endpoint: str, inputs: dict[str, Any], timeout_s: float,
               idle_timeout_s: float | None) -> Generator[Any, None, None]:
        """The chunks of a stream (:meth:`zeroserve.client.transport.Transport.stream`)."""
        request, timeout = _stream_request(service, endpoint, inputs, timeout_s,
                                           idle_timeout_s)
        content, headers = _content(request)  # (a stream's request is one bytes)
        with _network_errors(self.url), self._client.stream(
                request.method, request.path, content=content, headers=headers,
                timeout=timeout) as response:
            if response.status_code != 200:
                deadline = time.monotonic() + timeout_s + request.grace_s
                raise _stream_failure(response, b"".join(_within(deadline,
                                                                 response.iter_bytes())))
            _read_idle(response, idle_timeout_s)
            frames = payloads.StreamFrames()
            for piece in response.iter_bytes():
                yield from frames.feed(piece)
                if _stream_ended(frames):
                    return
            raise interrupted(_NO_END)

    def close(self) -> None:
        self._client.close()


class AsyncHttpTransport:
    """A pool of kept-alive connections to one gateway, for one event loop."""

    def __init__(self, url: str, api_key: str | None = None, tls: Tls = SYSTEM_TLS) -> None:
        self.url = url
        self._client = httpx.AsyncClient(**_httpx_options(url, api_key, tls))

    async def send(self, operation: Operation, timeout_s: float) -> Any:
        request = operation.http(timeout_s)
        content, headers = _content(request)
        limit_s = timeout_s + request.grace_s
        with _network_errors(self.url):
            response = await asyncio.wait_for(self._client.request(
                request.method, request.path,
                content=_each(content) if isinstance(content, list) else content,
                headers=headers, timeout=limit_s), limit_s)
        return operation.from_http(
            HttpAnswer(response.status_code, response.headers, response.content))

    async def stream(self, service: str, endpoint: str, inputs: dict[str, Any],
                     timeout_s: float, idle_timeout_s: float | None
                     ) -> AsyncGenerator[Any, None]:
        """The chunks of a stream, as :meth:`HttpTransport.stream`."""
        request, timeout = _stream_request(service, endpoint, inputs, timeout_s,
                                           idle_timeout_s)
        content, headers = _content(request)  # (a stream's request is one bytes)
        with _network_errors(self.url):
            async with self._client.stream(
                    request.method, request.path, content=content, headers=headers,
                    timeout=timeout) as response:
                if response.status_code != 200:
                    limit_s = timeout_s + request.grace_s
                    raise _stream_failure(response, await asyncio.wait_for(response.aread(),
                                                                           limit_s))
                _read_idle(response, idle_timeout_s)
                frames = payloads.StreamFrames()
                async for piece in response.aiter_bytes():
                    for value in frames.feed(piece):
                        yield value
                    if _stream_ended(frames):
                        return
                raise interrupted(_NO_END)

    async def close(self) -> None:
        await self._client.aclose()
