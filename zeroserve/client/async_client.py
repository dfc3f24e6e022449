"""The asyncio client: :class:`AsyncClient`, the same calls as :class:`zeroserve.Client`.

    async with zeroserve.AsyncClient("grpc://localhost:8001") as client:
        y = await client.call("mlp", "predict", x=np.zeros((1, 64), np.float32))
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import numpy as np

from zeroserve.client import operations as ops
from zeroserve.client.errors import CallInterrupted, Overloaded, ZeroserveError, no_chunk
from zeroserve.client.jobs import AsyncJob, JobsApi
from zeroserve.client.resend import ResendRule
from zeroserve.client.retry import CallRetries, GiveUp, Send, Wait
from zeroserve.client.transport import AsyncTransport, Operation, Tls, open_async_transport

_ENDED = object()  # a stream's first "chunk" when it ended without any


class AsyncClient:
    """:class:`zeroserve.Client` for asyncio: the same URLs, options, calls, deadlines, retries
    and exceptions, with ``await``. Use one per event loop; ``async with`` closes it."""

    def __init__(self, url: str = "http://localhost:8000", timeout: float = 30.0,
                 retry: bool = True, transport: AsyncTransport | None = None,
                 api_key: str | None = None, *, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.url = url
        self.timeout = timeout
        self.retry = retry
        self._transport = transport or open_async_transport(
            url, api_key, Tls(ca_file, cert_file, key_file))
        self._clock, self._sleep = clock, sleep
        self._resend = ResendRule()
        self._jobs = JobsApi(lambda op: self._run(op, self.timeout, retry=False), clock, sleep)

    async def call(self, service: str, endpoint: str, *, timeout: float | None = None,
                   version: int | None = None,
                   **inputs: Any) -> Any:
        """Call ``service/endpoint`` with named inputs; return the endpoint's value."""
        return await self._run(ops.Call(service, endpoint, inputs, version), timeout)

    async def call_with_stages(self, service: str, endpoint: str, *,
                               timeout: float | None = None, version: int | None = None,
                               **inputs: Any) -> ops.Staged:
        """:meth:`zeroserve.Client.call_with_stages` for asyncio."""
        return await self._run(ops.StagedCall(service, endpoint, inputs, version), timeout)

    def stream(self, service: str, endpoint: str, *, timeout: float | None = None,
               idle_timeout: float | None = None, **inputs: Any) -> AsyncIterator[Any]:
        """Call an endpoint that streams; ``async for`` the result for its chunks, as
        :meth:`zeroserve.Client.stream`. Leaving the iteration early closes the connection
        when the iterator is closed: at once with ``contextlib.aclosing``, else when it is
        garbage collected."""
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        return self._stream(service, endpoint, dict(inputs), timeout or self.timeout,
                            idle_timeout)

    async def _stream(self, service: str, endpoint: str, inputs: dict[str, Any],
                      budget_s: float, idle_s: float | None) -> AsyncIterator[Any]:
        chunks, first = await self._first_chunk(service, endpoint, inputs, budget_s, idle_s)
        try:
            if first is _ENDED:
                return
            yield first
            while True:
                try:
                    value = await anext(chunks)
                except StopAsyncIteration:
                    return
                except (TimeoutError, asyncio.TimeoutError):  # noqa: UP041 (two before 3.11)
                    raise no_chunk(idle_s) from None
                yield value
        finally:
            await chunks.aclose()

    async def _first_chunk(self, service: str, endpoint: str, inputs: dict[str, Any],
                           budget_s: float, idle_s: float | None
                           ) -> tuple[AsyncGenerator[Any, None], Any]:
        """The stream and its first chunk (:data:`_ENDED` for none), retrying overloads."""
        rule = CallRetries(budget_s, self._clock, retry=self.retry)
        step: Send | Wait | GiveUp = rule.next()
        while not isinstance(step, GiveUp):
            if isinstance(step, Send):
                chunks = self._transport.stream(service, endpoint, inputs, step.timeout_s,
                                                idle_s)
                try:
                    return chunks, await anext(chunks, _ENDED)
                except (TimeoutError, asyncio.TimeoutError):  # noqa: UP041 (two before 3.11)
                    step = rule.timed_out()
                except Overloaded as exc:
                    step = rule.refused(exc)
            else:
                await self._sleep(step.seconds)
                step = rule.next()
        raise step.error

    async def infer(self, model: str, inputs: Mapping[str, Any],
                    outputs: list[str] | None = None, *,
                    timeout: float | None = None) -> dict[str, np.ndarray]:
        """Run an Open Inference Protocol model on named tensors; return its outputs."""
        return await self._run(ops.Infer(model, inputs, outputs), timeout)

    async def submit(self, service: str, endpoint: str, *, idempotency_key: str | None = None,
                     **inputs: Any) -> AsyncJob:
        """Submit a durable job to task ``service/endpoint``; return its :class:`AsyncJob`."""
        info = await self._jobs.submit(service, endpoint, inputs, idempotency_key)
        return AsyncJob(self._jobs, str(info["id"]), info)

    async def jobs(self, service: str | None = None, state: str | None = None,
                   limit: int = 100, cursor: int | None = None) -> dict[str, Any]:
        """One page of stored jobs, as :meth:`zeroserve.Client.jobs`."""
        return await self._jobs.list(service, state, limit, cursor)

    async def services(self, timeout: float = 5.0) -> dict[str, Any]:
        """The services the cluster serves: ``{name: {"endpoints": {...}, "workers": n}}``."""
        return await self._run(ops.Services(), timeout, retry=False)

    async def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """``{"live", "ready", "services": {name: workers}, "reason"}``."""
        return await self._run(ops.Health(), timeout, retry=False)

    async def _run(self, operation: Operation, timeout: float | None,
                   retry: bool = True) -> Any:
        rule = CallRetries(timeout or self.timeout, self._clock, retry=self.retry and retry)
        step: Send | Wait | GiveUp = rule.next()
        while not isinstance(step, GiveUp):
            if isinstance(step, Send):
                try:
                    return await self._transport.send(operation, step.timeout_s)
                except (TimeoutError, asyncio.TimeoutError):  # noqa: UP041 (two before 3.11)
                    step = rule.timed_out()
                except Overloaded as exc:
                    step = rule.refused(exc)
                except CallInterrupted as exc:
                    resend = await self._may_resend(operation, rule.time_left())
                    step = rule.interrupted(exc, resend)
            else:
                await self._sleep(step.seconds)
                step = rule.next()
        raise step.error

    async def _may_resend(self, operation: Operation, time_left_s: float) -> bool:
        if self._resend.allows(operation) is None:
            try:
                self._resend.learn(await self._run(ops.Services(), time_left_s))
            except ZeroserveError:
                return False
        return bool(self._resend.allows(operation))

    async def close(self) -> None:
        """Close the connections to the gateway."""
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
