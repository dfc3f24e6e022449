"""The client SDK: ``Client("http://localhost:8000").call("mlp", "predict", x=array)``.

Numpy in, numpy out. The URL picks the transport: ``http://`` or ``https://`` (the REST
route with msgpack bodies, and the OIP HTTP route with binary tensors) or ``grpc://`` or
``grpcs://`` (the gateway's gRPC port: ``zeroserve.v1.Serving`` and the OIP gRPC service).
Both give the same answers and raise the same exceptions (:mod:`zeroserve.client.errors`).
:class:`AsyncClient` (``zeroserve.client.async_client``) is the same for asyncio; both
carry out the one retry rule of :mod:`zeroserve.client.retry`.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any

import numpy as np

from zeroserve.client import operations as ops
from zeroserve.client.errors import CallInterrupted, Overloaded, ZeroserveError, no_chunk
from zeroserve.client.jobs import Job, JobsApi
from zeroserve.client.resend import ResendRule
from zeroserve.client.retry import CallRetries, GiveUp, Send, Wait
from zeroserve.client.transport import Operation, Tls, Transport, open_transport

_ENDED = object()  # a stream's first "chunk" when it ended without any


class Client:
    """Calls a zeroserve cluster through one gateway. Thread-safe; a context manager.

    ``timeout`` (seconds) is the default deadline of each call, and bounds the whole call;
    the cluster drops a request whose deadline has passed. ``retry`` re-sends a call that
    was refused for overload (503, UNAVAILABLE, no gateway answering) after a jittered,
    growing wait (at least the answer's ``Retry-After``), as long as the deadline allows:
    such a call never ran. No other call is sent twice. ``api_key`` is sent with every call
    when the gateways require keys. ``ca_file`` (a CA bundle to trust for ``https://`` and
    ``grpcs://``), ``cert_file`` and ``key_file`` (a client certificate) configure TLS.
    ``clock`` and ``sleep`` pace the retries and job waits (tests pass fakes).
    """

    def __init__(self, url: str = "http://localhost:8000", timeout: float = 30.0,
                 retry: bool = True, transport: Transport | None = None,
                 api_key: str | None = None, *, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.url = url
        self.timeout = timeout
        self.retry = retry
        self._transport = transport or open_transport(url, api_key,
                                                      Tls(ca_file, cert_file, key_file))
        self._clock, self._sleep = clock, sleep
        self._resend = ResendRule()
        self._jobs = JobsApi(lambda op: self._run(op, self.timeout, retry=False), clock, sleep)

    def call(self, service: str, endpoint: str, *, timeout: float | None = None,
             version: int | None = None, **inputs: Any) -> Any:
        """Call ``service/endpoint`` with named inputs; return the endpoint's value.

        ``version`` runs that version of the service; without one the
        gateway chooses: by the operator's traffic split, else the latest version served.

        >>> client.call("mlp", "predict", x=np.zeros((1, 64), np.float32))  # doctest: +SKIP
        array([[...]], dtype=float32)

        Raises :class:`BadRequest`, :class:`NotFound`, :class:`Overloaded`,
        :class:`DeadlineExceeded` or :class:`ServerError` with the server's message;
        :class:`DeadlineExceeded` with ``from_server`` False when no answer came by the
        deadline, :class:`Unreachable` when no gateway could be reached,
        :class:`~zeroserve.client.errors.CallInterrupted` when the connection broke once the
        call was sent to an endpoint that may not run twice (``retry_on_worker_loss=False``;
        other endpoints' calls are sent again).
        """
        return self._run(ops.Call(service, endpoint, inputs, version), timeout)

    def call_with_stages(self, service: str, endpoint: str, *, timeout: float | None = None,
                         version: int | None = None, **inputs: Any) -> ops.Staged:
        """:meth:`call`, answered with the request id and the stages that answered it
        (which service and worker, queue and execution time each, and what each called):
        ``answer.value``, ``answer.request_id``, ``answer.stages``."""
        return self._run(ops.StagedCall(service, endpoint, inputs, version), timeout)

    def stream(self, service: str, endpoint: str, *, timeout: float | None = None,
               idle_timeout: float | None = None, **inputs: Any) -> Iterator[Any]:
        """Call an endpoint that streams (a generator); iterate the result for its chunks as
        they come, with numpy dtypes and shapes kept as :meth:`call` keeps them.

        >>> for token in client.stream("chat", "generate", prompt="hi"):  # doctest: +SKIP
        ...     print(token, end="")

        Nothing is sent before the first ``next``. ``timeout`` (seconds; the client's by
        default) bounds the wait for the first chunk, ``idle_timeout`` the wait for each next
        one (sent to the gateway, which otherwise applies its ``stream.idle_timeout_s``).
        Raises what :meth:`call` raises, before the first chunk or after any chunk (the
        error that ended the stream: :class:`ServerError` when the generator raised,
        :class:`DeadlineExceeded` past a limit); a stream refused for overload before it
        started is retried like a call. Leaving the iteration early (``break``, ``close()``)
        closes the connection, and the cluster closes the generator.
        """
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        return self._stream(service, endpoint, dict(inputs), timeout or self.timeout,
                            idle_timeout)

    def _stream(self, service: str, endpoint: str, inputs: dict[str, Any], budget_s: float,
                idle_s: float | None) -> Iterator[Any]:
        chunks, first = self._first_chunk(service, endpoint, inputs, budget_s, idle_s)
        with contextlib.closing(chunks):
            if first is _ENDED:
                return
            yield first
            try:
                yield from chunks
            except TimeoutError:
                raise no_chunk(idle_s) from None

    def _first_chunk(self, service: str, endpoint: str, inputs: dict[str, Any],
                     budget_s: float, idle_s: float | None
                     ) -> tuple[Generator[Any, None, None], Any]:
        """The stream and its first chunk (:data:`_ENDED` for none), retrying overloads."""
        rule = CallRetries(budget_s, self._clock, retry=self.retry)
        step: Send | Wait | GiveUp = rule.next()
        while not isinstance(step, GiveUp):
            if isinstance(step, Send):
                chunks = self._transport.stream(service, endpoint, inputs, step.timeout_s,
                                                idle_s)
                try:
                    return chunks, next(chunks, _ENDED)
                except TimeoutError:
                    step = rule.timed_out()
                except Overloaded as exc:
                    step = rule.refused(exc)
            else:
                self._sleep(step.seconds)
                step = rule.next()
        raise step.error

    def infer(self, model: str, inputs: Mapping[str, Any], outputs: list[str] | None = None,
              *, timeout: float | None = None) -> dict[str, np.ndarray]:
        """Run an Open Inference Protocol model (``service`` or ``service.endpoint``) on named
        tensors; return its outputs by name (all of them, or those in ``outputs``)."""
        return self._run(ops.Infer(model, inputs, outputs), timeout)

    def submit(self, service: str, endpoint: str, *, idempotency_key: str | None = None,
               **inputs: Any) -> Job:
        """Submit a durable job to task ``service/endpoint``; return its :class:`Job` handle
        (``status()``, ``result(timeout=)``, ``cancel()``), over HTTP or gRPC."""
        info = self._jobs.submit(service, endpoint, inputs, idempotency_key)
        return Job(self._jobs, str(info["id"]), info)

    def jobs(self, service: str | None = None, state: str | None = None, limit: int = 100,
             cursor: int | None = None) -> dict[str, Any]:
        """One page of stored jobs, oldest first, optionally of one ``service`` and in one
        ``state`` (``queued``, ``running``, ``succeeded``, ``failed``, ``cancelled``):
        ``{"jobs": [status, ...], "next_cursor": int | None}``; pass ``next_cursor`` back as
        ``cursor`` for the next page. Raises :class:`BadRequest` for an unknown state."""
        return self._jobs.list(service, state, limit, cursor)

    def services(self, timeout: float = 5.0) -> dict[str, Any]:
        """The services the cluster serves: ``{name: {"endpoints": {...}, "workers": n}}``."""
        return self._run(ops.Services(), timeout, retry=False)

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """``{"live", "ready", "services": {name: workers}, "reason"}``; raises
        :class:`Unreachable` when no gateway answers."""
        return self._run(ops.Health(), timeout, retry=False)

    def _run(self, operation: Operation, timeout: float | None, retry: bool = True) -> Any:
        rule = CallRetries(timeout or self.timeout, self._clock, retry=self.retry and retry)
        step: Send | Wait | GiveUp = rule.next()
        while not isinstance(step, GiveUp):
            if isinstance(step, Send):
                try:
                    return self._transport.send(operation, step.timeout_s)
                except TimeoutError:
                    step = rule.timed_out()
                except Overloaded as exc:
                    step = rule.refused(exc)
                except CallInterrupted as exc:
                    step = rule.interrupted(exc, self._may_resend(operation, rule.time_left()))
            else:
                self._sleep(step.seconds)
                step = rule.next()
        raise step.error

    def _may_resend(self, operation: Operation, time_left_s: float) -> bool:
        if self._resend.allows(operation) is None:
            try:
                self._resend.learn(self._run(ops.Services(), time_left_s))
            except ZeroserveError:
                return False
        return bool(self._resend.allows(operation))

    def close(self) -> None:
        """Close the connection to the gateway."""
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
