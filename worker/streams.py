"""Runs one stream (a generator endpoint's BATCH of one request) and its flow control.

:class:`StreamWindow` is the pure rule: the generator is advanced only while fewer than
``stream.window_chunks`` chunks and ``stream.window_bytes`` bytes are in flight (sent and not
credited by the reader). :class:`StreamRun` drives the user's generator: it sends each
yielded value as a STREAM_CHUNK, waits for credit when the window is full, closes the
generator when the caller cancels (``close()`` / ``aclose()``, so ``finally:`` blocks run),
and ends with the batch's RESULT. A sync generator's ``next()`` runs off the event loop (it
may block) and cannot be interrupted: a cancel takes effect when it yields. An async one is
interrupted at once.

While the worker traces (``docs/tracing.md``), a stream whose request carries a trace context
has a ``worker stream`` span from the generator's first step to its end, current while the
generator runs (in the thread of a sync one's steps too), so that the service's own spans and
its dependency calls nest under it. The context is taken out of the inputs whatever the
worker's tracing.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zeroserve.config import StreamSettings
from zeroserve.service import EndpointSpec
from zeroserve.tracing import TRACEPARENT_KEY, take_carried
from zeroserve.wire import codec
from zeroserve.wire.backend import BatchItem, Result, ResultItem
from zeroserve.wire.envelope import Command, Status, pack_map
from zeroserve.wire.stream import Chunks, batch_key, frames_size

if TYPE_CHECKING:
    from zeroserve.tracing.spans import WorkerTracer

log = logging.getLogger("zeroserve.worker")

_END = object()  # what next() gives at the end of a sync generator


class StreamWindow:
    """Chunks and bytes in flight on one stream, against the window's limits."""

    def __init__(self, max_chunks: int, max_bytes: int) -> None:
        self.max_chunks = max(1, max_chunks)
        self.max_bytes = max(1, max_bytes)
        self.chunks = 0
        self.nbytes = 0

    @property
    def open(self) -> bool:
        """Whether the generator may produce the next chunk (which is then sent whatever its
        size: bytes in flight stay below the window plus one chunk)."""
        return self.chunks < self.max_chunks and self.nbytes < self.max_bytes

    def sent(self, nbytes: int) -> None:
        self.chunks += 1
        self.nbytes += nbytes

    def credit(self, chunks: int, nbytes: int) -> None:
        """The reader took ``chunks`` chunks of ``nbytes`` bytes (never more than were sent)."""
        self.chunks = max(0, self.chunks - chunks)
        self.nbytes = max(0, self.nbytes - nbytes)


class _Stop(Exception):
    """The stream must end early with ``status`` and ``message``."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


_CANCELLED = (Status.CANCELLED, "the caller cancelled the stream")
_LATE = (Status.DEADLINE_EXCEEDED, "deadline exceeded before the first chunk")
BURST_S = 0.001  # chunks produced within this long of each other go in one CHUNK message


class StreamRun:
    """One stream: the generator of ``endpoint`` on ``instance`` for the request ``item`` of
    batch ``batch_id``. ``send`` sends frames to the broker; ``call_sync`` runs a blocking
    function off the loop (the worker's thread pool); ``clock`` is monotonic seconds;
    ``tracing`` (None: off) makes the stream's span.

    The stream runs in one task, which awaits the generator directly; a cancel (or the first
    chunk's deadline) cancels that task, so an async generator is interrupted where it
    awaits. Chunks produced without the task suspending in between are sent together, in one
    message, when it next suspends (or after :data:`BURST_S`)."""

    def __init__(self, batch_id: int, item: BatchItem, endpoint: EndpointSpec, instance: Any,
                 send: Callable[[list], None], call_sync: Callable[[Callable[[], Any]], Any],
                 settings: StreamSettings, clock: Callable[[], float] = time.monotonic,
                 service: str = "", tracing: WorkerTracer | None = None) -> None:
        self.batch_id = batch_id
        self.item = item
        self.endpoint = endpoint
        self.instance = instance
        self._send = send
        self._call_sync = call_sync
        self._clock = clock
        self._idle_s = settings.idle_timeout_s
        self._name = f"{service}.{endpoint.name}"
        self._service = service
        self._tracing = tracing
        self.window = StreamWindow(settings.window_chunks, settings.window_bytes)
        self._credited = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopped_for: tuple[Status, str] | None = None  # why the task was cancelled
        self._burst: list[list] = []  # bodies produced and not yet sent
        self._burst_at = 0.0
        self._in_generator = False
        self.chunks = 0

    # ------------------------------------------------------------ from the broker

    def credit(self, chunks: int, nbytes: int) -> None:
        self.window.credit(chunks, nbytes)
        if self.window.open:
            self._credited.set()

    def cancel(self) -> None:
        self._stop(_CANCELLED)

    def _stop(self, why: tuple[Status, str]) -> None:
        # only while the task runs the generator: a cancel that came as the stream was ending
        # (closing the generator, say) must not keep its RESULT from being sent
        if self._stopped_for is None and self._task is not None and self._in_generator:
            self._stopped_for = why
            self._task.cancel()

    # ------------------------------------------------------------ the stream

    async def run(self) -> Result:
        """Run the stream to its end and return the RESULT that ends it (after its chunks)."""
        self._task = asyncio.current_task()
        started = self._clock()
        status, message = await self._stream()
        self._flush()
        meta = pack_map({"chunks": self.chunks} if status is Status.OK else {"error": message})
        return Result(self.batch_id, self._clock() - started,
                      [ResultItem(self.item.request_id, status, [meta])])

    async def _stream(self) -> tuple[Status, str]:
        if self.item.timeout_ms <= 0:
            return Status.DEADLINE_EXCEEDED, "deadline exceeded before execution"
        try:
            inputs = codec.decode(self.item.frames[0], self.item.frames[1:])
            if not isinstance(inputs, dict):
                raise codec.CodecError("inputs must be a map of names to values")
        except codec.CodecError as exc:
            return Status.BAD_REQUEST, str(exc)
        carried = take_carried(inputs) if TRACEPARENT_KEY in inputs else None
        span = None if self._tracing is None or carried is None else \
            self._tracing.stream(carried, self._service, self.endpoint.name)
        if span is None:
            return await self._generate(inputs, contextvars.copy_context())
        assert self._tracing is not None
        token = self._tracing.attach(span)  # this task's context: the stream runs in its own
        try:
            status, message = await self._generate(inputs, contextvars.copy_context())
        except BaseException as exc:
            self._tracing.stream_ended(span, self.chunks, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._tracing.detach(token)
        self._tracing.stream_ended(span, self.chunks, "" if status is Status.OK else message)
        return status, message

    async def _generate(self, inputs: dict, context: contextvars.Context
                        ) -> tuple[Status, str]:
        """Run the generator on ``inputs`` to its end; a sync one's steps run in ``context``
        (a copy of the stream task's, which holds its span)."""
        try:
            gen = getattr(self.instance, self.endpoint.method)(**inputs)
        except Exception as exc:  # user code (a bad signature): report, keep serving
            return Status.USER_ERROR, f"{type(exc).__name__}: {exc}"
        late = asyncio.get_running_loop().call_later(self.item.timeout_ms / 1000.0,
                                                     self._stop, _LATE)
        step: asyncio.Future | None = None  # a sync generator's next() in a thread
        self._in_generator = True
        try:
            while True:
                if self._stopped_for is not None:  # a generator that swallowed the cancel
                    raise _Stop(*self._stopped_for)
                await self._window_open()
                if self.endpoint.is_async:
                    value = await anext(gen, _END)
                else:
                    step = asyncio.ensure_future(self._call_sync(
                        lambda: context.run(next, gen, _END)))
                    value = await asyncio.shield(step)
                    step = None
                if value is _END:
                    return Status.OK, ""
                late.cancel()
                self._add_chunk(value)
        except asyncio.CancelledError:
            self._in_generator = False
            if self._stopped_for is None:
                raise  # the worker itself is stopping
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):  # 3.11
                task.uncancel()
            if step is not None:  # next() cannot be interrupted: let it finish, then close
                await asyncio.gather(step, return_exceptions=True)
            await self._close(gen, context)
            return self._stopped_for
        except _Stop as stop:
            self._in_generator = False
            await self._close(gen, context)
            return stop.status, str(stop)
        except Exception as exc:  # the user's generator raised
            log.warning("worker: %s raised %s after %d chunks: %s", self._name,
                        type(exc).__name__, self.chunks, exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            return Status.USER_ERROR, f"{type(exc).__name__}: {exc}"
        finally:
            self._in_generator = False
            late.cancel()

    async def _window_open(self) -> None:
        while not self.window.open:
            self._flush()
            self._credited.clear()
            try:
                await asyncio.wait_for(self._credited.wait(), self._idle_s)
            except TimeoutError:
                raise _Stop(Status.DEADLINE_EXCEEDED,
                            f"the reader took no chunk for {self._idle_s:g} s") from None

    def _add_chunk(self, value: Any) -> None:
        try:
            meta, frames = codec.encode(value)
        except codec.CodecError as exc:
            raise _Stop(Status.USER_ERROR, f"the endpoint yielded a value that cannot be sent "
                                           f"(chunk {self.chunks}): {exc}") from None
        body = [meta, *frames]
        self.window.sent(frames_size(body))
        self.chunks += 1
        now = self._clock()
        if not self._burst:
            self._burst_at = now
            asyncio.get_running_loop().call_soon(self._flush)
        self._burst.append(body)
        if now - self._burst_at >= BURST_S:
            self._flush()

    def _flush(self) -> None:
        """Send the chunks produced and not yet sent, in one message."""
        if self._burst:
            first = self.chunks - len(self._burst)
            self._send(Chunks(batch_key(self.batch_id), first, self._burst)
                       .to_frames(Command.STREAM_CHUNK))
            self._burst = []

    async def _close(self, gen: Any, context: contextvars.Context) -> None:
        """Close the generator so that its ``finally:`` blocks run; what they raise is logged."""
        try:
            if self.endpoint.is_async:
                await gen.aclose()
            else:
                await self._call_sync(lambda: context.run(gen.close))
        except Exception as exc:  # user code
            log.warning("worker: closing %s raised %s: %s", self._name, type(exc).__name__,
                        exc)
