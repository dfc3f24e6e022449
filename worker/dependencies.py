"""Dependency calls: a worker's service calling another service through the broker.

The worker holds a DEALER on the broker's frontend, like a gateway (:class:`DependencyLink`),
and sets one :class:`ServiceHandle` per ``zeroserve.depends`` attribute on the service
instance. A call is an ordinary REQUEST whose time left is what is left of the calling
request's deadline (:data:`CURRENT`, set by the runner around each endpoint call); a caller
whose deadline has passed makes no call. A call that outlives the caller's deadline, or
whose caller is cancelled, is cancelled at the broker (the CANCEL that streams use: a request
still queued is never executed).

Slots: while a batch has dependency calls in flight the worker tells the broker (WAITING), and
the broker counts that batch's slot as free, so that a service calling itself, or A -> B -> A,
still has slots for the calls it waits on (``docs/composition.md``).
"""
from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import os
import struct
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zmq

from batching.tensors import batch_key, row_count
from zeroserve.curve import Curve
from zeroserve.dependency import DependencyError
from zeroserve.loopsocket import LoopSocket
from zeroserve.schema import InvalidInput, validate_inputs
from zeroserve.sockets import open_socket
from zeroserve.stream_call import StreamCall
from zeroserve.tracing import with_trace
from zeroserve.wire import codec
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription
from zeroserve.wire.envelope import ProtocolError, Status, unpack_map
from zeroserve.wire.frontend import (
    DEPENDENCY_PREFIX,
    Control,
    ControlOp,
    Reply,
    Request,
    error_details,
)
from zeroserve.wire.stream import Cancel, Chunks, parse_answer

if TYPE_CHECKING:
    from zeroserve.tracing.spans import WorkerTracer

log = logging.getLogger("zeroserve.worker")

_GRACE_S = 0.5  # past the caller's deadline, for the broker's own 504 of the call
WAITING_AFTER_S = 0.002  # a batch whose calls take longer is reported waiting (WAITING)


@dataclass(frozen=True)
class CallContext:
    """The request an endpoint call serves: its batch and its deadline (monotonic seconds);
    ``trace``: the trace contexts of the requests it serves while tracing is on (empty: none
    traced, or tracing off); ``stages`` collects the stages of the calls it makes when its
    caller wants them (None: not wanted)."""

    batch_id: int
    deadline: float
    trace: tuple = ()
    stages: list | None = None


CURRENT: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "zeroserve_call", default=None)


class DependencyLink:
    """Sends dependency calls to the broker's frontend and matches their replies.

    ``waiting(batch_id, flag)`` tells the broker that a batch waits on calls (or no longer);
    ``clock`` is the monotonic clock the deadlines are on."""

    def __init__(self, address: str, context: zmq.Context, curve: Curve | None,
                 waiting: Callable[[int, bool], None], cluster: str = "",
                 clock: Callable[[], float] = time.monotonic, caller: str = "") -> None:
        self.address = address
        self.caller = caller  # the calling service: the broker counts calls per caller
        self._context = context
        self._curve = curve
        self._waiting = waiting
        self._cluster = cluster
        self._clock = clock
        self._socket: LoopSocket | None = None
        self._ids = itertools.count(1)
        self._pending: dict[bytes, asyncio.Future] = {}
        self._calls_of: Counter[int] = Counter()  # batch id -> its calls in flight
        self._timers: dict[int, asyncio.TimerHandle] = {}  # batch id -> its WAITING to come
        self._told_waiting: set[int] = set()  # batches the broker counts as waiting
        self._described: dict[str, ServiceDescription] = {}  # from the broker's MODELS
        self._streams: dict[bytes, StreamCall] = {}  # request id -> a stream being read
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread = 0
        self.tracing: WorkerTracer | None = None  # on: a span per call, carried to the callee

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        sock = open_socket(self._context, zmq.DEALER, curve=self._curve)
        sock.setsockopt(zmq.ROUTING_ID, dependency_identity(self.caller))
        sock.connect(self.address)
        self._socket = LoopSocket(sock, self._on_message, copied=5)

    def close(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        if self._socket is not None:
            self._socket.close()

    def _on_message(self, frames: list) -> None:
        try:
            reply = parse_answer(frames)
        except ProtocolError as exc:
            log.warning("worker: dropped a malformed message of the dependency link (%s)", exc)
            return
        if isinstance(reply, Chunks):
            stream = self._streams.get(reply.key)
            if stream is not None:
                stream.arrive(reply)
            return
        fut = self._pending.get(reply.request_id)
        if fut is not None and not fut.done():
            fut.set_result(reply)
        elif reply.request_id in self._streams:
            self._streams[reply.request_id].finish(reply)

    async def _exchange(self, request_id: bytes, frames: list, wait_s: float) -> Any:
        assert self._socket is not None, "start() first"
        fut = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        try:
            self._socket.send(frames)
            return await asyncio.wait_for(fut, wait_s)
        finally:
            self._pending.pop(request_id, None)

    async def served(self) -> set[str] | None:
        """The services the broker knows (its MODELS answer, kept for the calls' schemas),
        or None if it does not answer."""
        request_id = struct.pack(">Q", next(self._ids))
        try:
            reply = await self._exchange(request_id, Control(
                request_id, ControlOp.MODELS, {}, self._cluster).to_frames(), 2.0)
            answer = unpack_map(reply.meta, "models answer")
        except (TimeoutError, ProtocolError):
            return None
        services = answer.get("services") if isinstance(answer, dict) else None
        if not isinstance(services, dict):
            return None
        for name, desc in services.items():
            try:
                self._described[name] = ServiceDescription.from_map(name, desc)
            except ProtocolError:
                continue
        return set(services)

    async def _endpoint(self, service: str, endpoint: str) -> EndpointDescription | None:
        """The callee's description (asking the broker on a miss); None if the broker does
        not know it (yet): the call goes anyway, and the broker answers it."""
        known = self._described.get(service)
        if known is None or endpoint not in known.endpoints:
            await self.served()
            known = self._described.get(service)
        if known is None:
            return None
        found = known.endpoints.get(endpoint)
        if found is None:
            raise DependencyError(service, endpoint, int(Status.NOT_FOUND),
                                  f"service '{service}' has no endpoint '{endpoint}'")
        return found

    async def _request(self, service: str, endpoint: str, inputs: dict, left_s: float,
                       carried: tuple[str, str] | None = None, stages: bool = False
                       ) -> tuple[bytes, list]:
        """The REQUEST of a call (its id and frames): inputs checked against the callee's
        schema and keyed for batching as a gateway does, carrying the trace context
        ``carried`` (traceparent, tracestate); DependencyError if they are bad."""
        if left_s <= 0:
            raise DependencyError(service, endpoint, int(Status.DEADLINE_EXCEEDED),
                                  "the calling request's deadline has passed; not called")
        described = await self._endpoint(service, endpoint)
        rows, key = 1, b""
        try:
            if described is not None:
                inputs = validate_inputs(described.inputs, inputs)
                if described.batchable:
                    rows = row_count(inputs, described.batch_dim)
                    key = batch_key(inputs, described.batch_dim)
            meta, frames = codec.encode(inputs)
        except (InvalidInput, codec.CodecError) as exc:
            raise DependencyError(service, endpoint, int(Status.BAD_REQUEST),
                                  f"inputs cannot be sent: {exc}") from None
        if carried is not None:
            meta = with_trace(meta, *carried)
        request_id = struct.pack(">Q", next(self._ids))
        return request_id, Request(request_id, service, endpoint, max(int(left_s * 1000), 1),
                                   meta, frames, rows, key, stages=stages).to_frames()

    async def call(self, service: str, endpoint: str, inputs: dict, caller: CallContext | None,
                   default_timeout_s: float, parent: Any = None) -> Any:
        """Call ``service.endpoint`` for the request ``caller`` serves (None: outside a
        request, e.g. in a background task or a stream: ``default_timeout_s``);
        DependencyError if it fails. While tracing is on the call has its span, the child
        of ``parent`` (the calling thread's trace context) or else of the current one."""
        if self.tracing is None:
            return await self._call(service, endpoint, inputs, caller, default_timeout_s, None)
        with self.tracing.dependency_call(service, endpoint, parent) as carried:
            return await self._call(service, endpoint, inputs, caller, default_timeout_s,
                                    carried)

    async def _call(self, service: str, endpoint: str, inputs: dict, caller: CallContext | None,
                    default_timeout_s: float, carried: tuple[str, str] | None) -> Any:
        left_s = default_timeout_s if caller is None else caller.deadline - self._clock()
        stages = caller.stages if caller is not None else None
        request_id, request = await self._request(service, endpoint, inputs, left_s, carried,
                                                  stages is not None)
        batch = caller.batch_id if caller is not None else None
        self._begin(batch)
        try:
            reply = await self._exchange(request_id, request, left_s + _GRACE_S)
        except TimeoutError:
            self._cancel(request_id)
            raise DependencyError(service, endpoint, int(Status.DEADLINE_EXCEEDED),
                                  "no answer before the calling request's deadline") from None
        except asyncio.CancelledError:
            self._cancel(request_id)
            raise
        finally:
            self._end(batch)
        if stages is not None and reply.stages:
            stages.extend(reply.stages)
        if reply.status is not Status.OK:
            raise _failure(service, endpoint, reply.status, str(error_details(reply)["error"]))
        try:
            return codec.decode(reply.meta, reply.body)
        except codec.CodecError as exc:
            raise DependencyError(service, endpoint, int(Status.INTERNAL),
                                  f"undecodable answer: {exc}") from None

    async def stream(self, service: str, endpoint: str, inputs: dict,
                     caller: CallContext | None, default_timeout_s: float
                     ) -> AsyncGenerator[Any, None]:
        """The chunks of a streaming endpoint of another service, each within what is left
        of the caller's deadline (``default_timeout_s`` without one); DependencyError if it
        fails. Leaving the iteration early cancels the stream."""
        deadline = self._clock() + default_timeout_s if caller is None else caller.deadline
        request_id, request = await self._request(service, endpoint, inputs,
                                                  deadline - self._clock())
        assert self._socket is not None, "start() first"
        call = StreamCall(request_id, request, self._socket.send, self._forget)
        self._streams[request_id] = call
        batch = caller.batch_id if caller is not None else None
        self._begin(batch)
        self._socket.send(request)
        try:
            while True:
                try:
                    event = await call.next(deadline - self._clock() + _GRACE_S)
                except TimeoutError:
                    raise DependencyError(service, endpoint, int(Status.DEADLINE_EXCEEDED), (
                        "no chunk before the calling request's deadline")) from None
                if isinstance(event, Reply):
                    if event.status is Status.OK:
                        return
                    raise _failure(service, endpoint, event.status,
                                   str(error_details(event)["error"]))
                try:
                    value = codec.decode(event.frames[0], event.frames[1:])
                except codec.CodecError as exc:
                    raise DependencyError(service, endpoint, int(Status.INTERNAL),
                                          f"undecodable chunk: {exc}") from None
                yield value
                call.took(event)
        finally:
            call.cancel()  # nothing once the stream has ended
            self._end(batch)

    def _forget(self, call: StreamCall) -> None:
        self._streams.pop(call.request_id, None)

    def _cancel(self, request_id: bytes) -> None:
        if self._socket is not None:
            self._socket.send(Cancel(request_id).to_frames())

    def _begin(self, batch: int | None) -> None:
        """A call of ``batch`` starts; the broker hears that the batch waits only if its
        calls take longer than WAITING_AFTER_S (a fast call costs no WAITING messages)."""
        if batch is None:
            return
        self._calls_of[batch] += 1
        if self._calls_of[batch] == 1 and self.loop is not None:
            self._timers[batch] = self.loop.call_later(WAITING_AFTER_S, self._now_waiting,
                                                       batch)

    def _now_waiting(self, batch: int) -> None:
        self._timers.pop(batch, None)
        self._told_waiting.add(batch)
        self._waiting(batch, True)

    def _end(self, batch: int | None) -> None:
        if batch is None:
            return
        self._calls_of[batch] -= 1
        if self._calls_of[batch] > 0:
            return
        del self._calls_of[batch]
        timer = self._timers.pop(batch, None)
        if timer is not None:
            timer.cancel()
        if batch in self._told_waiting:
            self._told_waiting.discard(batch)
            self._waiting(batch, False)


def dependency_identity(caller: str) -> bytes:
    """The routing id of a worker's dependency link, naming its service (what the broker
    counts calls per caller by; it routes by the id, it does not trust it for anything else)."""
    return DEPENDENCY_PREFIX + caller.encode() + b":" + os.urandom(4).hex().encode()


def _failure(service: str, endpoint: str, status: Status, message: str) -> DependencyError:
    if status is Status.NOT_FOUND and message.startswith("unknown service"):
        # a service that no deployment serves is unavailable, not a bad request of the caller
        return DependencyError(service, endpoint, int(Status.NO_WORKER),
                               f"no worker of this cluster serves '{service}'")
    if status is Status.QUEUE_FULL:
        status = Status.NO_WORKER
    return DependencyError(service, endpoint, int(status), message)


class ServiceHandle:
    """What a ``zeroserve.depends`` attribute is in a worker: calls of service ``name``."""

    def __init__(self, link: DependencyLink, name: str, default_timeout_s: float = 30.0) -> None:
        self._link = link
        self.name = name
        self._default_timeout_s = default_timeout_s

    async def call(self, endpoint: str, /, **inputs: Any) -> Any:
        """Call ``endpoint`` of the service with ``inputs``, from async code; its answer, or
        :class:`~zeroserve.DependencyError`."""
        return await self._link.call(self.name, endpoint, inputs, CURRENT.get(),
                                     self._default_timeout_s)

    def stream(self, endpoint: str, /, **inputs: Any) -> AsyncGenerator[Any, None]:
        """The chunks of a streaming ``endpoint`` of the service, from async code::

            async for token in self.llm.stream("generate", prompt=prompt):
                ...
        """
        return self._link.stream(self.name, endpoint, inputs, CURRENT.get(),
                                 self._default_timeout_s)

    def call_sync(self, endpoint: str, /, **inputs: Any) -> Any:
        """``call`` from a sync endpoint (which runs in one of the worker's threads)."""
        loop = self._link.loop
        assert loop is not None, "the dependency link is not started"
        if threading.get_ident() == self._link.loop_thread:
            raise RuntimeError("call_sync() on the worker's event loop would block it: use "
                               "'await ....call()' in an async endpoint")
        caller = CURRENT.get()
        tracing = self._link.tracing
        future = asyncio.run_coroutine_threadsafe(self._link.call(
            self.name, endpoint, inputs, caller, self._default_timeout_s,
            None if tracing is None else tracing.current()), loop)
        return future.result()

    def __repr__(self) -> str:
        return f"<dependency on service {self.name!r}>"
