"""The client SDK: ``Client("http://localhost:8000").call("mlp", "predict", x=array)``.

Numpy in, numpy out. The URL picks the transport: ``http://`` (the REST route
with msgpack bodies, and the OIP HTTP route with binary tensors) or
``grpc://`` (the gateway's gRPC port: ``zeroserve.v1.Serving`` and the OIP gRPC
service). Both give the same answers and raise the same exceptions
(:mod:`zeroserve.client.errors`). :class:`AsyncClient` (``zeroserve.client.async_client``) is
the same for asyncio.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import numpy as np

from zeroserve.client.errors import (
    BadRequest,
    DeadlineExceeded,
    Forbidden,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    ServerError,
    Unauthorized,
    Unreachable,
    ZeroserveError,
    from_http,
    no_answer,
    passed_while_retrying,
)
from zeroserve.client.jobs import Job, jobs_api
from zeroserve.client.retry import retry_delay

__all__ = ["Client", "ZeroserveError", "BadRequest", "NotFound", "Overloaded", "Unreachable",
           "DeadlineExceeded", "ServerError", "PayloadTooLarge", "Unauthorized", "Forbidden",
           "error_for"]

T = TypeVar("T")
error_for = from_http  # the typed exception of an HTTP status (kept for callers of 0.1)


class Transport(Protocol):
    """What :class:`Client` needs from a connection to a gateway."""

    def call(self, service: str, endpoint: str, inputs: Mapping[str, Any],
             timeout_s: float) -> Any: ...

    def infer(self, model: str, inputs: Mapping[str, Any], outputs: list[str] | None,
              timeout_s: float) -> dict[str, np.ndarray]: ...

    def services(self, timeout_s: float) -> dict[str, Any]: ...

    def health(self, timeout_s: float) -> dict[str, Any]: ...

    def close(self) -> None: ...


def make_transport(url: str, api_key: str | None = None) -> Transport:
    """The transport of a URL: ``http://host:port`` or ``grpc://host:port``."""
    if url.startswith("http://"):
        from zeroserve.client.http_transport import HttpTransport

        return HttpTransport(url, api_key)
    if url.startswith("grpc://"):
        from zeroserve.client.grpc_transport import GrpcTransport

        return GrpcTransport(url, api_key)
    raise ValueError(f"unsupported URL {url!r}: use http://host:port or grpc://host:port")


class Client:
    """Calls a zeroserve cluster through one gateway. Thread-safe; a context manager.

    ``timeout`` (seconds) is the default deadline of each call; the cluster drops a
    request whose deadline has passed. ``retry`` re-sends a call that was refused for
    overload (503, UNAVAILABLE, no gateway answering) after a jittered, growing wait,
    as long as the deadline allows: such a call never ran. ``api_key`` is sent with
    every call when the gateways require keys.
    """

    def __init__(self, url: str = "http://localhost:8000", timeout: float = 30.0,
                 retry: bool = True, transport: Transport | None = None,
                 api_key: str | None = None) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.url = url
        self.timeout = timeout
        self.retry = retry
        self._transport = transport or make_transport(url, api_key)
        self._clock: Callable[[], float] = time.monotonic
        self._sleep: Callable[[float], None] = time.sleep

    def call(self, service: str, endpoint: str, *, timeout: float | None = None,
             **inputs: Any) -> Any:
        """Call ``service/endpoint`` with named inputs; return the endpoint's value.

        >>> client.call("mlp", "predict", x=np.zeros((1, 64), np.float32))  # doctest: +SKIP
        array([[...]], dtype=float32)

        Raises :class:`BadRequest`, :class:`NotFound`, :class:`Overloaded`,
        :class:`DeadlineExceeded` or :class:`ServerError` with the server's message;
        :class:`DeadlineExceeded` with ``from_server`` False when no answer came by the
        deadline (+1 s over HTTP), :class:`Unreachable` when no gateway could be reached.
        """
        return self._with_retries(
            timeout, lambda left: self._transport.call(service, endpoint, inputs, left))

    def infer(self, model: str, inputs: Mapping[str, Any], outputs: list[str] | None = None,
              *, timeout: float | None = None) -> dict[str, np.ndarray]:
        """Run an Open Inference Protocol model (``service`` or ``service.endpoint``) on named
        tensors; return its outputs by name (all of them, or those in ``outputs``)."""
        return self._with_retries(
            timeout, lambda left: self._transport.infer(model, inputs, outputs, left))

    def submit(self, service: str, endpoint: str, *, idempotency_key: str | None = None,
               **inputs: Any) -> Job:
        """Submit a durable job to task ``service/endpoint``; return its :class:`Job` handle
        (``status()``, ``result(timeout=)``, ``cancel()``), over ``http://`` or ``grpc://``."""
        return jobs_api(self._transport, self.timeout).submit(service, endpoint, inputs,
                                                              idempotency_key)

    def jobs(self, service: str | None = None, state: str | None = None, limit: int = 100,
             cursor: int | None = None) -> dict[str, Any]:
        """One page of stored jobs, oldest first, optionally of one ``service`` and in one
        ``state`` (``queued``, ``running``, ``succeeded``, ``failed``, ``cancelled``):
        ``{"jobs": [status, ...], "next_cursor": int | None}``; pass ``next_cursor`` back as
        ``cursor`` for the next page. Raises :class:`BadRequest` for an unknown state."""
        return jobs_api(self._transport, self.timeout).list(service, state, limit, cursor)

    def services(self, timeout: float = 5.0) -> dict[str, Any]:
        """The services the cluster serves: ``{name: {"endpoints": {...}, "workers": n}}``."""
        return self._transport.services(timeout)

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """``{"live", "ready", "services": {name: workers}, "reason"}``; raises
        :class:`Unreachable` when no gateway answers."""
        return self._transport.health(timeout)

    def _with_retries(self, timeout: float | None, attempt: Callable[[float], T]) -> T:
        budget = timeout or self.timeout
        deadline = self._clock() + budget
        tries = 0
        last: Overloaded | None = None  # the overload answer being retried
        while True:
            started = self._clock()
            left = deadline - started
            if left <= 0:
                raise passed_while_retrying(last)
            try:
                return attempt(left)
            except TimeoutError:
                raise no_answer(self._clock() - started, budget) from None
            except Overloaded as exc:
                delay = retry_delay(tries, deadline - self._clock(), random.random) \
                    if self.retry else None
                if delay is None:
                    raise
                self._sleep(delay)
                tries, last = tries + 1, exc

    def close(self) -> None:
        """Close the connection to the gateway."""
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
