"""The HTTP transports on httpx, sync and async: the REST route (msgpack) and the OIP HTTP
route (binary tensors) of one gateway at ``http://`` or ``https://host:port[/prefix]``.

The call's time bounds the whole exchange, the body included (httpx's own timeouts are per
read): the sync transport checks the time left after every chunk of the body, the async one
awaits the exchange under one timeout. A call is sent at most once: httpx reuses a kept-alive
connection only while it is idle and sound, and a broken exchange is never sent again here.
"""
from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx

from zeroserve.client.errors import Unreachable, interrupted
from zeroserve.client.transport import SYSTEM_TLS, HttpAnswer, Operation, Tls


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


def _within(deadline: float, chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        if time.monotonic() > deadline:
            raise TimeoutError("the answer did not arrive before the deadline")
        yield chunk


class HttpTransport:
    """A pool of kept-alive connections to one gateway (thread-safe)."""

    def __init__(self, url: str, api_key: str | None = None, tls: Tls = SYSTEM_TLS) -> None:
        self.url = url
        self._client = httpx.Client(**_httpx_options(url, api_key, tls))

    def send(self, operation: Operation, timeout_s: float) -> Any:
        request = operation.http(timeout_s)
        deadline = time.monotonic() + timeout_s + request.grace_s
        with _network_errors(self.url), self._client.stream(
                request.method, request.path, content=request.body, headers=request.headers,
                timeout=deadline - time.monotonic()) as response:
            body = b"".join(_within(deadline, response.iter_bytes()))
        return operation.from_http(HttpAnswer(response.status_code, response.headers, body))

    def close(self) -> None:
        self._client.close()


class AsyncHttpTransport:
    """A pool of kept-alive connections to one gateway, for one event loop."""

    def __init__(self, url: str, api_key: str | None = None, tls: Tls = SYSTEM_TLS) -> None:
        self.url = url
        self._client = httpx.AsyncClient(**_httpx_options(url, api_key, tls))

    async def send(self, operation: Operation, timeout_s: float) -> Any:
        request = operation.http(timeout_s)
        limit_s = timeout_s + request.grace_s
        with _network_errors(self.url):
            response = await asyncio.wait_for(self._client.request(
                request.method, request.path, content=request.body, headers=request.headers,
                timeout=limit_s), limit_s)
        return operation.from_http(
            HttpAnswer(response.status_code, response.headers, response.content))

    async def close(self) -> None:
        await self._client.aclose()
