"""Runs one stream (a generator endpoint's BATCH of one request) and its flow control.

:class:`StreamWindow` is the pure rule: the generator is advanced only while fewer than
``stream.window_chunks`` chunks and ``stream.window_bytes`` bytes are in flight (sent and not
credited by the reader). :class:`StreamRun` drives the user's generator: it sends each
yielded value as a STREAM_CHUNK, waits for credit when the window is full, closes the
generator when the caller cancels (``close()`` / ``aclose()``, so ``finally:`` blocks run),
and ends with the batch's RESULT. A sync generator's ``next()`` runs off the event loop (it
may block) and cannot be interrupted: a cancel takes effect when it yields. An async one is
interrupted at once.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from zeroserve.config import StreamSettings
from zeroserve.service import EndpointSpec
from zeroserve.wire import codec
from zeroserve.wire.backend import BatchItem, Result, ResultItem
from zeroserve.wire.envelope import Command, Status, pack_map
from zeroserve.wire.stream import Chunk, batch_key, frames_size

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


class StreamRun:
    """One stream: the generator of ``endpoint`` on ``instance`` for the request ``item`` of
    batch ``batch_id``. ``send`` sends frames to the broker; ``call_sync`` runs a blocking
    function off the loop (the worker's thread pool); ``clock`` is monotonic seconds."""

    def __init__(self, batch_id: int, item: BatchItem, endpoint: EndpointSpec, instance: Any,
                 send: Callable[[list], None], call_sync: Callable[[Callable[[], Any]], Any],
                 settings: StreamSettings, clock: Callable[[], float] = time.monotonic,
                 service: str = "") -> None:
        self.batch_id = batch_id
        self.item = item
        self.endpoint = endpoint
        self.instance = instance
        self._send = send
        self._call_sync = call_sync
        self._clock = clock
        self._idle_s = settings.idle_timeout_s
        self._name = f"{service}.{endpoint.name}"
        self.window = StreamWindow(settings.window_chunks, settings.window_bytes)
        self._credited = asyncio.Event()
        self._cancelled = asyncio.Event()
        self.chunks = 0

    # ------------------------------------------------------------ from the broker

    def credit(self, chunks: int, nbytes: int) -> None:
        self.window.credit(chunks, nbytes)
        if self.window.open:
            self._credited.set()

    def cancel(self) -> None:
        self._cancelled.set()

    # ------------------------------------------------------------ the stream

    async def run(self) -> Result:
        """Run the stream to its end and return the RESULT that ends it."""
        started = self._clock()
        status, message = await self._stream(started + self.item.timeout_ms / 1000.0)
        meta = pack_map({"chunks": self.chunks} if status is Status.OK else {"error": message})
        return Result(self.batch_id, self._clock() - started,
                      [ResultItem(self.item.request_id, status, [meta])])

    async def _stream(self, first_deadline: float) -> tuple[Status, str]:
        if self.item.timeout_ms <= 0:
            return Status.DEADLINE_EXCEEDED, "deadline exceeded before execution"
        try:
            inputs = codec.decode(self.item.frames[0], self.item.frames[1:])
            if not isinstance(inputs, dict):
                raise codec.CodecError("inputs must be a map of names to values")
        except codec.CodecError as exc:
            return Status.BAD_REQUEST, str(exc)
        try:
            gen = getattr(self.instance, self.endpoint.method)(**inputs)
        except Exception as exc:  # user code (a bad signature): report, keep serving
            return Status.USER_ERROR, f"{type(exc).__name__}: {exc}"
        try:
            while True:
                await self._window_open()
                limit = first_deadline if self.chunks == 0 else None
                value = await (self._next_async(gen, limit) if self.endpoint.is_async
                               else self._next_sync(gen, limit))
                if value is _END:
                    return Status.OK, ""
                self._send_chunk(value)
        except _Stop as stop:
            await self._close(gen)
            return stop.status, str(stop)

    async def _window_open(self) -> None:
        while not self.window.open:
            if self._cancelled.is_set():
                raise _Stop(Status.CANCELLED, "the caller cancelled the stream")
            self._credited.clear()
            waits = [asyncio.ensure_future(self._credited.wait()),
                     asyncio.ensure_future(self._cancelled.wait())]
            done, pending = await asyncio.wait(waits, timeout=self._idle_s,
                                               return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()
            if not done:
                raise _Stop(Status.DEADLINE_EXCEEDED,
                            f"the reader took no chunk for {self._idle_s:g} s")
        if self._cancelled.is_set():
            raise _Stop(Status.CANCELLED, "the caller cancelled the stream")

    async def _race(self, step: asyncio.Future, limit: float | None) -> bool:
        """Wait for ``step`` or a cancel, until the monotonic ``limit`` (None: no limit);
        True if ``step`` finished."""
        cancelled = asyncio.ensure_future(self._cancelled.wait())
        timeout = None if limit is None else max(limit - self._clock(), 0.0)
        await asyncio.wait([step, cancelled], timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
        cancelled.cancel()
        return step.done()

    def _stopped(self) -> _Stop:
        if self._cancelled.is_set():
            return _Stop(Status.CANCELLED, "the caller cancelled the stream")
        return _Stop(Status.DEADLINE_EXCEEDED, "deadline exceeded before the first chunk")

    async def _next_async(self, gen: Any, limit: float | None) -> Any:
        step = asyncio.ensure_future(gen.__anext__())
        if not await self._race(step, limit):
            step.cancel()  # interrupts the generator where it awaits
            await asyncio.gather(step, return_exceptions=True)
            raise self._stopped()
        return self._outcome(step)

    async def _next_sync(self, gen: Any, limit: float | None) -> Any:
        step = asyncio.ensure_future(self._call_sync(lambda: next(gen, _END)))
        if not await self._race(step, limit):
            await asyncio.gather(step, return_exceptions=True)  # next() cannot be interrupted
            raise self._stopped()
        return self._outcome(step)

    def _outcome(self, step: asyncio.Future) -> Any:
        exc = step.exception()
        if isinstance(exc, StopAsyncIteration):
            return _END
        if exc is not None:
            log.warning("worker: %s raised %s after %d chunks: %s", self._name,
                        type(exc).__name__, self.chunks, exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            raise _Stop(Status.USER_ERROR, f"{type(exc).__name__}: {exc}")
        return step.result()

    def _send_chunk(self, value: Any) -> None:
        try:
            meta, frames = codec.encode(value)
        except codec.CodecError as exc:
            raise _Stop(Status.USER_ERROR, f"the endpoint yielded a value that cannot be sent "
                                           f"(chunk {self.chunks}): {exc}") from None
        body = [meta, *frames]
        self._send(Chunk(batch_key(self.batch_id), self.chunks, body)
                   .to_frames(Command.STREAM_CHUNK))
        self.window.sent(frames_size(body))
        self.chunks += 1

    async def _close(self, gen: Any) -> None:
        """Close the generator so that its ``finally:`` blocks run; what they raise is logged."""
        try:
            if self.endpoint.is_async:
                await gen.aclose()
            else:
                await self._call_sync(gen.close)
        except Exception as exc:  # user code
            log.warning("worker: closing %s raised %s: %s", self._name, type(exc).__name__,
                        exc)
