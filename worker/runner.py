"""Runs one BATCH against the user's service instance and builds the RESULT; no sockets.

For a batchable endpoint the requests' tensors are merged along the batch
dimension, the user function is called once, and the output is split back by
each request's row count. Otherwise each request is one call.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batching.tensors import BatchMergeError, BatchSplitError, merge, split
from worker.dependencies import CURRENT, CallContext
from worker.placement import Placement
from zeroserve.dependency import DependencyError
from zeroserve.schema import InvalidOutput, check_outputs
from zeroserve.service import EndpointSpec, ServiceSpec
from zeroserve.tracing import TRACEPARENT_KEY, take_carried
from zeroserve.wire import codec
from zeroserve.wire.backend import Batch, Result, ResultItem
from zeroserve.wire.envelope import Status, pack_map, status_from_code

if TYPE_CHECKING:
    from zeroserve.tracing.spans import WorkerTracer

log = logging.getLogger("zeroserve.worker")


class UserError(Exception):
    """The user's endpoint raised; the message is ``Type: message`` without a traceback.
    ``status``: USER_ERROR, or the status of a dependency call's failure it let escape."""

    def __init__(self, message: str, status: Status = Status.USER_ERROR) -> None:
        super().__init__(message)
        self.status = status


def _error_item(request_id: bytes, status: Status, message: str, **extra: Any) -> ResultItem:
    return ResultItem(request_id, status, [pack_map({"error": message, **extra})])


def _ok_item(request_id: bytes, value: Any) -> ResultItem:
    try:
        meta, frames = codec.encode(value)
    except codec.CodecError as exc:
        return _error_item(request_id, Status.USER_ERROR,
                           f"the endpoint returned a value that cannot be sent: {exc}")
    return ResultItem(request_id, Status.OK, [meta, *frames])


class BatchRunner:
    """Executes batches for one loaded service instance.

    ``call_sync`` runs a blocking function off the event loop (the worker
    passes its thread pool). Sync endpoints that prove fast run inline
    instead (see ``worker.placement``), so the loop is only ever held briefly.
    ``clock`` (seconds, monotonic) times each request's deadline, from the batch's
    arrival, and the batch's execution time. A service with dependencies never runs inline:
    its sync endpoints may block in ``call_sync``. ``tracing`` (None: off) makes the spans
    of the requests that carry a trace context (``zeroserve.tracing``).
    """

    def __init__(self, spec: ServiceSpec, instance: Any,
                 call_sync: Callable[[Callable[[], Any]], Any],
                 clock: Callable[[], float] = time.monotonic,
                 tracing: WorkerTracer | None = None) -> None:
        self._clock = clock
        self._tracing = tracing
        self._may_inline = not spec.dependencies
        self.spec = spec
        self.instance = instance
        self._call_sync = call_sync
        self._placement = {name: Placement() for name in spec.endpoints}

    def can_run_inline(self, endpoint_name: str) -> bool:
        """Whether a batch for this endpoint may run synchronously (see ``run_inline``)."""
        endpoint = self.spec.endpoints.get(endpoint_name)
        return endpoint is not None and not endpoint.is_async and self._may_inline and \
            self._placement[endpoint.name].inline

    def run_inline(self, batch: Batch) -> Result:
        """``run`` without the event loop, for an endpoint where ``can_run_inline`` holds.

        With ``inline_only`` nothing inside ``run`` awaits anything that can suspend, so
        the coroutine finishes on its first step; this saves scheduling a task per batch.
        """
        coro = self.run(batch, inline_only=True)
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value
        coro.close()
        raise RuntimeError("an inline batch suspended")

    async def run(self, batch: Batch, inline_only: bool = False) -> Result:
        """Run every live request of ``batch``; never raises for a request's own failure.

        ``inline_only`` runs sync endpoints on the caller's thread whatever their placement.
        """
        endpoint = self.spec.endpoints.get(batch.endpoint)
        if endpoint is None:
            return Result(batch.batch_id, 0.0, [
                _error_item(it.request_id, Status.NOT_FOUND,
                            f"service '{self.spec.name}' has no endpoint '{batch.endpoint}'")
                for it in batch.items])
        items: list[ResultItem] = []
        live: list[tuple[bytes, dict]] = []
        wanted = {it.request_id for it in batch.items if it.stages}
        received = self._clock()
        deadlines: dict[bytes, float] = {}
        tracing = self._tracing
        traces: dict[bytes, Any] = {}  # request id -> the trace context it carries
        for it in batch.items:
            if it.timeout_ms <= 0:
                items.append(_error_item(it.request_id, Status.DEADLINE_EXCEEDED,
                                         "deadline exceeded before execution"))
                continue
            decoding_ns = 0 if tracing is None else time.time_ns()
            try:
                inputs = codec.decode(it.frames[0], it.frames[1:])
                if not isinstance(inputs, dict):
                    raise codec.CodecError("inputs must be a map of names to values")
            except codec.CodecError as exc:
                items.append(_error_item(it.request_id, Status.BAD_REQUEST, str(exc)))
                continue
            if TRACEPARENT_KEY in inputs:  # sent by a gateway or a caller that traces
                carried = take_carried(inputs)
                parent = None if tracing is None else tracing.decoded(carried, decoding_ns)
                if parent is not None:
                    traces[it.request_id] = parent
            live.append((it.request_id, inputs))
            deadlines[it.request_id] = received + it.timeout_ms / 1000.0
        started = self._clock()
        timings = _Timings(input_s=started - received)
        if live:
            if endpoint.batchable and len(live) > 1:
                call = CallContext(batch.batch_id, max(deadlines.values()), tuple(
                    traces[rid] for rid, _ in live if rid in traces), [] if wanted else None)
                merged = await self._run_merged(endpoint, live, inline_only, timings, call)
                items.extend(_with_stages(merged, wanted, call))
            else:
                for request_id, inputs in live:
                    if self._clock() >= deadlines[request_id]:
                        items.append(_error_item(request_id, Status.DEADLINE_EXCEEDED,
                                                 "deadline exceeded before execution"))
                        continue
                    call = CallContext(batch.batch_id, deadlines[request_id],
                                       (traces[request_id],) if request_id in traces else (),
                                       [] if request_id in wanted else None)
                    items.extend(_with_stages([await self._run_one(
                        endpoint, request_id, inputs, inline_only, timings, call)], wanted, call))
        return Result(batch.batch_id, self._clock() - started, items, timings.input_s,
                      timings.infer_s, timings.output_s)

    async def _invoke(self, endpoint: EndpointSpec, inputs: dict, inline_only: bool,
                      call: CallContext) -> Any:
        method = getattr(self.instance, endpoint.method)
        placement = self._placement[endpoint.name]
        token = CURRENT.set(call)  # what dependency calls read for their deadline
        try:
            if endpoint.is_async:
                return await method(**inputs)
            if (placement.inline and self._may_inline) or inline_only:
                started = time.perf_counter()
                try:
                    return method(**inputs)
                finally:
                    placement.observe(time.perf_counter() - started)
            return await self._in_thread(method, inputs, placement)
        except DependencyError as exc:  # a stage it called failed: answer with that stage's
            log.info("worker: %s.%s: %s", self.spec.name, endpoint.name, exc)  # status
            raise UserError(f"dependency call failed: {exc}",
                            status_from_code(exc.status) or Status.USER_ERROR) from None
        except Exception as exc:  # user code: report, keep serving
            log.warning("worker: %s.%s raised %s: %s", self.spec.name, endpoint.name,
                        type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            raise UserError(f"{type(exc).__name__}: {exc}") from None
        finally:
            CURRENT.reset(token)

    async def _in_thread(self, method: Callable[..., Any], inputs: dict,
                         placement: Placement) -> Any:
        """``method(**inputs)`` through ``call_sync``. The placement is told how long the call
        ran in its thread, not how long it waited for one: under load the hop alone can take
        longer than ``inline_below_s``, and a fast endpoint would never move inline."""
        context = contextvars.copy_context()
        ran_s: list[float] = []

        def timed() -> Any:
            begun = time.perf_counter()
            try:
                return context.run(method, **inputs)
            finally:
                ran_s.append(time.perf_counter() - begun)

        submitted = time.perf_counter()
        try:
            return await self._call_sync(timed)
        finally:  # left before the thread ended (cancelled): at least as long as it waited
            placement.observe(ran_s[0] if ran_s else time.perf_counter() - submitted)

    async def _invoke_traced(self, endpoint: EndpointSpec, inputs: dict, inline_only: bool,
                             call: CallContext) -> Any:
        """``_invoke`` within the execute span of the requests ``call`` serves."""
        assert self._tracing is not None
        with self._tracing.execute(call.trace, self.spec.name, endpoint.name):
            return await self._invoke(endpoint, inputs, inline_only, call)

    def _check(self, endpoint: EndpointSpec, value: Any) -> None:
        """Raise :class:`UserError` if ``value`` does not match the declared outputs."""
        try:
            check_outputs(endpoint.outputs, value)
        except InvalidOutput as exc:
            log.warning("worker: %s.%s answered outside its declared outputs: %s",
                        self.spec.name, endpoint.name, exc)
            raise UserError(str(exc)) from None

    async def _run_one(self, endpoint: EndpointSpec, request_id: bytes, inputs: dict,
                       inline_only: bool, timings: _Timings, call: CallContext) -> ResultItem:
        begun = self._clock()
        invoke = self._invoke_traced if call.trace else self._invoke
        try:
            value = await invoke(endpoint, inputs, inline_only, call)
            answered = self._clock()
            encoding_ns = time.time_ns() if call.trace else 0
            timings.infer_s += answered - begun
            self._check(endpoint, value)
        except UserError as exc:
            return _error_item(request_id, exc.status, str(exc))
        item = _ok_item(request_id, value)
        timings.output_s += self._clock() - answered
        if call.trace and self._tracing is not None:
            self._tracing.encoded(call.trace[0], encoding_ns)
        return item

    async def _run_merged(self, endpoint: EndpointSpec, live: list[tuple[bytes, dict]],
                          inline_only: bool, timings: _Timings, call: CallContext
                          ) -> list[ResultItem]:
        ids = [rid for rid, _ in live]
        begun = self._clock()
        try:
            merged, counts = merge([inputs for _, inputs in live], endpoint.batch_dim)
            called = self._clock()
            timings.input_s += called - begun
            invoke = self._invoke_traced if call.trace else self._invoke
            output = await invoke(endpoint, merged, inline_only, call)
            answered = self._clock()
            encoding_ns = time.time_ns() if call.trace else 0
            timings.infer_s += answered - called
            self._check(endpoint, output)
            pieces = split(output, counts, endpoint.batch_dim)
        except (BatchMergeError, BatchSplitError) as exc:
            return [_error_item(rid, Status.USER_ERROR, str(exc)) for rid in ids]
        except UserError as exc:
            return [_error_item(rid, exc.status, str(exc)) for rid in ids]
        items = [_ok_item(rid, piece) for rid, piece in zip(ids, pieces)]
        timings.output_s += self._clock() - answered
        if call.trace and self._tracing is not None:
            self._tracing.encoded(call.trace[0], encoding_ns)
        return items


def _with_stages(items: list[ResultItem], wanted: set[bytes], call: CallContext
                 ) -> list[ResultItem]:
    """``items``, those whose caller wants stages given the ones their call collected."""
    if call.stages:
        for item in items:
            if item.request_id in wanted:
                item.stages = call.stages
    return items


@dataclass
class _Timings:
    """Seconds one batch spent on its inputs, in the user function and on its answers."""

    input_s: float = 0.0
    infer_s: float = 0.0
    output_s: float = 0.0


def run_blocking_in(loop: asyncio.AbstractEventLoop, pool: Any) -> Callable:
    """A ``call_sync`` that runs functions in ``pool`` and awaits them on ``loop``."""

    def call_sync(fn: Callable[[], Any]) -> Any:
        return loop.run_in_executor(pool, fn)

    return call_sync
