"""One stream through the broker, shared by every front end (REST SSE and NDJSON, gRPC,
the Open Inference Protocol's decoupled responses, the OpenAI-compatible routes).

:func:`open_stream` validates the inputs (a 400 before anything streams), starts the stream
and returns its chunks as an async iterator; each front end frames them its own way. The
limits (:class:`StreamLimits`) are kept here: the first chunk within the call's deadline, each
next one within the idle limit, all of them within the total limit. A front end bounds its
own writes with :func:`written` (a client that stops reading is a stream gone idle too).
Leaving the iteration early (the client went away, a limit passed, an error) cancels the
stream: the worker closes the generator. Every failure is a
:class:`~gateway.errors.RequestFailed`.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.broker_link import BrokerLink
from gateway.errors import RequestFailed
from zeroserve.config import StreamSettings
from zeroserve.schema import validate_inputs
from zeroserve.wire import codec
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import Status
from zeroserve.wire.frontend import Reply, error_details
from zeroserve.wire.stream import Chunk

_GRACE_S = 0.5  # past the first chunk's deadline: room for the broker's own 504
T = TypeVar("T")


@dataclass(frozen=True)
class StreamLimits:
    """How long a stream may take: ``first_s`` to its first chunk (the call's timeout),
    ``idle_s`` between chunks and for each write to the client, ``total_s`` in all (0: no
    limit)."""

    first_s: float
    idle_s: float
    total_s: float = 0.0

    @classmethod
    def of(cls, first_s: float, settings: StreamSettings, idle_s: float | None = None,
           total_s: float | None = None) -> StreamLimits:
        """The limits of one call: its timeout, and the settings unless the call sets its own."""
        return cls(first_s, settings.idle_timeout_s if idle_s is None else idle_s,
                   settings.total_timeout_s if total_s is None else total_s)


IDLE_HEADER = "X-Zeroserve-Stream-Idle-Timeout"    # seconds; gRPC: the same, lower case
TOTAL_HEADER = "X-Zeroserve-Stream-Total-Timeout"  # seconds; 0: no limit


def stream_limits(first_s: float, settings: StreamSettings,
                  header: Callable[[str], str | None]) -> StreamLimits:
    """The limits of one call from its headers (HTTP headers or gRPC metadata, looked up by
    ``header``), defaulting to the settings; a bad value is a 400."""
    def seconds(name: str, zero_ok: bool) -> float | None:
        raw = header(name)
        if raw is None:
            raw = header(name.lower())
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise RequestFailed(Status.BAD_REQUEST, f"{name} must be a positive number of "
                                                    f"seconds, got {raw!r}")
        return value
    return StreamLimits.of(first_s, settings, seconds(IDLE_HEADER, False),
                           seconds(TOTAL_HEADER, True))


def decode_chunk(chunk: Chunk) -> Any:
    """A chunk's value, decoded with the codec."""
    try:
        return codec.decode(chunk.frames[0], chunk.frames[1:])
    except codec.CodecError as exc:
        raise RequestFailed(Status.INTERNAL,
                            f"worker sent an undecodable stream chunk: {exc}") from None


def _failure(reply: Reply) -> RequestFailed:
    details = error_details(reply)
    return RequestFailed(reply.status, str(details["error"]), details.get("retry_after_s"))


async def open_stream(link: BrokerLink, info: EndpointDescription, inputs: Any,
                      limits: StreamLimits) -> AsyncGenerator[Chunk, None]:
    """Validate ``inputs`` (raises :class:`~zeroserve.schema.InvalidInput`) and start the
    stream; iterate the result for its chunks. A failure before the first chunk is raised by
    the first ``__anext__``, so a front end can still answer it with a status."""
    inputs = validate_inputs(info.inputs, inputs)
    try:
        meta, frames = codec.encode(inputs)
    except codec.CodecError as exc:
        raise RequestFailed(Status.BAD_REQUEST, f"inputs cannot be sent: {exc}") from None
    return _chunks(link, info, meta, frames, limits)


async def _chunks(link: BrokerLink, info: EndpointDescription, meta: bytes, frames: list,
                  limits: StreamLimits) -> AsyncGenerator[Chunk, None]:
    call = link.stream(info, limits.first_s, meta, frames)
    started = time.monotonic()
    try:
        while True:
            first = call.received == 0
            wait_s = limits.first_s + _GRACE_S if first else limits.idle_s
            if limits.total_s > 0:
                wait_s = min(wait_s, started + limits.total_s - time.monotonic())
            try:
                event = await call.next(wait_s)
            except TimeoutError:
                raise RequestFailed(Status.DEADLINE_EXCEEDED, _limit_message(
                    limits, first, time.monotonic() - started)) from None
            if isinstance(event, Reply):
                if event.status is Status.OK:
                    return
                raise _failure(event)
            yield event
            call.took(event)
    finally:
        call.cancel()  # nothing once the stream has ended


def _limit_message(limits: StreamLimits, first: bool, elapsed_s: float) -> str:
    if limits.total_s > 0 and elapsed_s >= limits.total_s - 0.001:
        return f"the stream ran past its total limit of {limits.total_s:g} s"
    if first:
        return "deadline exceeded before the stream's first chunk"
    return f"the stream was idle for {limits.idle_s:g} s (no chunk came)"


async def written(write: Awaitable[T], limits: StreamLimits) -> T:
    """Await a front end's write to its client (a flush, say) within the idle limit: a client
    that stops reading loses its stream (RequestFailed DEADLINE_EXCEEDED), so that readers that
    never read cannot hold every worker's slot."""
    try:
        return await asyncio.wait_for(write, limits.idle_s)
    except TimeoutError:
        raise RequestFailed(Status.DEADLINE_EXCEEDED, (
            f"the client did not read the stream for {limits.idle_s:g} s")) from None
