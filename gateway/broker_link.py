"""The gateway's one DEALER connection to the broker, shared by every HTTP and gRPC call.

Requests are matched to replies by an 8-byte id. Every call has a deadline
here too, so a caller never waits forever even if the broker vanishes. The
link pings the broker to know it is alive; when the broker's id changes (it
restarted), requests still waiting are sent again to the new broker if their
endpoint allows running twice (``retry_on_worker_loss``): the old broker may have
handed them to a worker already. The others are answered INTERNAL at once, saying
that they may or may not have run.

The link keeps the broker's MODELS answer as typed descriptions. A young broker
(within its start-up grace) may not have heard from every worker again yet, so its
answer is *provisional*: services it lacks but this gateway knew stay known (with no
workers), and a name the descriptions lack is not proof that the broker does not
serve it (:attr:`BrokerLink.knows_every_service`).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import zmq

from zeroserve.curve import Curve
from zeroserve.liveness import Liveness
from zeroserve.loopsocket import LoopSocket
from zeroserve.sockets import open_socket
from zeroserve.stream_call import StreamCall
from zeroserve.traffic import SpreadDraws
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription
from zeroserve.wire.envelope import ProtocolError, Status, unpack_map
from zeroserve.wire.frontend import (
    Control,
    ControlOp,
    Reply,
    Request,
    error_details,
    error_reply,
)
from zeroserve.wire.stream import Chunks, parse_answer

if TYPE_CHECKING:
    from zeroserve.tracing.spans import GatewayTracer

log = logging.getLogger("zeroserve.gateway")

# how long past a request's deadline the gateway waits for the broker's 504 before it answers
# 504 itself: less than the SDK's 1 s over HTTP, so that the caller gets an answer, not a timeout
_GRACE_S = 0.5
SETTLE_LIMIT_S = 10.0  # the longest a call naming an unknown service waits for a young broker
_SETTLE_STEP_S = 0.05


class BrokerRefused(TimeoutError):
    """A broker of another cluster refused a control call: handled as a broker that does not
    answer (the call waited out its timeout), so that the gateway is not ready."""


def _refusal(reply: Reply) -> str | None:
    """The message of a broker's refusal of this cluster's control call, or None."""
    if reply.status is not Status.BAD_REQUEST:
        return None
    details = error_details(reply)
    return str(details["error"]) if "cluster" in details else None


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


@dataclass(frozen=True)
class ModelsAnswer:
    """One MODELS answer: the services it describes, the broker that gave it, and how long
    before that broker's start-up grace ran out it was given (``grace_s - uptime_s``, at least
    0). An answer given past the grace is *settled*: every live worker had time to register
    with the broker again. ``shm`` holds, per service, the distinct ``(shm namespace, key
    prefix)`` of its workers (None for what a worker did not say): where shared memory inputs
    may be read in place (:mod:`zeroserve.wire.shm_refs`)."""

    broker_id: str
    services: dict[str, ServiceDescription]
    settles_in_s: float = 0.0
    shm: dict[str, frozenset[tuple[str | None, str | None]]] = field(default_factory=dict)

    @property
    def settled(self) -> bool:
        return self.settles_in_s <= 0.0

    @classmethod
    def read(cls, answer: Any) -> ModelsAnswer:
        """Read a MODELS answer; a service with a bad description is left out (logged), and
        ProtocolError if the answer has no services map."""
        services = answer.get("services") if isinstance(answer, dict) else None
        if not isinstance(services, dict):
            raise ProtocolError("a MODELS answer without services")
        described = {}
        for name, desc in services.items():
            try:
                described[name] = ServiceDescription.from_map(name, desc)
            except ProtocolError as exc:
                log.warning("gateway: ignoring the bad description of service %s: %s", name, exc)
        uptime_s, grace_s = answer.get("uptime_s", 0.0), answer.get("grace_s", 0.0)
        timed = all(isinstance(v, (int, float)) for v in (uptime_s, grace_s))
        return cls(str(answer.get("broker_id")), described,
                   max(grace_s - uptime_s, 0.0) if timed else 0.0, _shm_namespaces(answer))


def _shm_namespaces(answer: dict) -> dict[str, frozenset[tuple[str | None, str | None]]]:
    """A MODELS answer's ``shm`` map; what is malformed in it counts as a worker that said
    nothing (so its service's inputs are copied)."""
    shm = answer.get("shm")
    if not isinstance(shm, dict):
        return {}
    namespaces = {}
    for service, pairs in shm.items():
        namespaces[str(service)] = frozenset(
            (p[0], p[1]) if isinstance(p, list) and len(p) == 2 and
            all(isinstance(v, str) for v in p) else (None, None)
            for p in (pairs if isinstance(pairs, list) else [None]))
    return namespaces


def known_services(known: Mapping[str, ServiceDescription], answer: ModelsAnswer
                   ) -> dict[str, ServiceDescription]:
    """What a gateway knows after ``answer``: the answer itself once settled; while it is
    provisional, also the services of ``known`` that it lacks, with no workers (theirs may not
    have registered again yet). In the answer's order, the kept ones after."""
    if answer.settled:
        return answer.services
    kept = {name: replace(desc, workers=0) for name, desc in known.items()
            if name not in answer.services}
    return {**answer.services, **kept}


class BrokerLink:
    """Sends requests and control calls to the broker and awaits their replies.

    Every control call names ``cluster`` (``cluster.name``); while the broker refuses them
    (it is another cluster's), ``refusal`` says why and the broker counts as not alive."""

    def __init__(self, address: str, heartbeat_s: float, liveness: int,
                 schema_refresh_s: float, curve: Curve | None = None,
                 cluster: str = "default") -> None:
        self.address = address
        self.cluster = cluster
        self.refusal: str | None = None
        self.curve = curve
        self.heartbeat_s = heartbeat_s
        self.liveness = Liveness.of_heartbeats(heartbeat_s, liveness)  # of the broker
        self.schema_refresh_s = schema_refresh_s
        self.draws = SpreadDraws()  # this gateway's draws for traffic splits (zeroserve.traffic)
        self.context = zmq.Context()
        self._socket: LoopSocket | None = None
        self._ids = itertools.count(1)
        # request id -> its future, its frames, and the endpoint of a REQUEST (None: control)
        self._pending: dict[bytes, tuple[asyncio.Future, list, EndpointDescription | None]] = {}
        self._streams: dict[bytes, tuple[StreamCall, EndpointDescription]] = {}
        self.broker_id: str | None = None
        self.descriptions: dict[str, ServiceDescription] = {}
        """The services the broker serves, as its MODELS answers describe them
        (:func:`known_services`)."""
        self._models: ModelsAnswer | None = None  # the latest MODELS answer
        self._models_at = 0.0
        self._tasks: list[asyncio.Task] = []
        self.tracing: GatewayTracer | None = None  # on: each REQUEST carries its call's span

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        sock = open_socket(self.context, zmq.DEALER, curve=self.curve)
        sock.connect(self.address)
        self._socket = LoopSocket(sock, self._on_message, copied=5)  # REPLY up to its meta
        self._tasks = [asyncio.create_task(self._ping())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for fut, _, _ in self._pending.values():
            if not fut.done():
                fut.cancel()
        for stream, _ in list(self._streams.values()):
            stream.cancel()
        if self._socket is not None:
            self._socket.close()
        self.context.term()

    @property
    def alive(self) -> bool:
        """Whether the broker was heard from within its liveness window (``zeroserve.liveness``)."""
        return self.refusal is None and self.liveness.alive(time.monotonic())

    @property
    def knows_every_service(self) -> bool:
        """Whether a service or endpoint missing from :attr:`descriptions` is one the broker
        does not serve (so 404 is the answer): the latest MODELS answer is settled and came
        from the broker that the pings reach now. False while the broker is young, or
        restarted since the answer."""
        models = self._models
        return models is not None and models.settled and models.broker_id == self.broker_id

    def shm_namespaces(self, service: str) -> frozenset[tuple[str | None, str | None]]:
        """The distinct ``(shm namespace, key prefix)`` of ``service``'s workers, as the
        latest MODELS answer gives them (empty: none known)."""
        models = self._models
        return models.shm.get(service, frozenset()) if models is not None else frozenset()

    # ------------------------------------------------------------ calls

    def _next_id(self) -> bytes:
        return struct.pack(">Q", next(self._ids))

    async def _exchange(self, request_id: bytes, frames: list, wait_s: float,
                        endpoint: EndpointDescription | None = None) -> Reply:
        """Send ``frames`` (a REQUEST to ``endpoint``, or a control call) and await the reply;
        raise TimeoutError after ``wait_s``."""
        assert self._socket is not None, "start() first"
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending[request_id] = (fut, frames, endpoint)
        expiry = loop.call_later(wait_s, _expire, fut)
        try:
            self._socket.send(frames)
            return await fut
        finally:
            expiry.cancel()
            self._pending.pop(request_id, None)

    async def request(self, endpoint: EndpointDescription, timeout_s: float, meta: bytes,
                      body: list, rows: int = 1, batch_key: bytes = b"",
                      stages: bool = False) -> Reply:
        """Send one request to ``endpoint``; return the broker's reply (a 504 reply if none
        comes in time, a 503 one without sending while the broker refuses this cluster). A
        broker restart while it waits sends it again only if the endpoint allows running
        twice (``retry_on_worker_loss``); else it is answered INTERNAL. ``stages`` asks
        for the stages that answered it (``Reply.stages``)."""
        request_id = self._next_id()
        if self.refusal is not None:
            return error_reply(request_id, Status.NO_WORKER,
                               f"the broker at {self.address} refuses this gateway: "
                               f"{self.refusal}")
        if self.tracing is not None:
            meta = self.tracing.outgoing(meta, endpoint.service, endpoint.name)
        frames = Request(request_id, endpoint.service, endpoint.name,
                         max(int(timeout_s * 1000), 1), meta, body, rows,
                         batch_key, endpoint.version, stages).to_frames()
        try:
            return await self._exchange(request_id, frames, timeout_s + _GRACE_S, endpoint)
        except TimeoutError:
            return error_reply(request_id, Status.DEADLINE_EXCEEDED,
                                 "no answer from the broker before the deadline")

    def stream(self, endpoint: EndpointDescription, timeout_s: float, meta: bytes,
               body: list) -> StreamCall:
        """Start a stream of ``endpoint`` (one that ``streams``); its chunks and its end come
        through the :class:`~zeroserve.stream_call.StreamCall`. ``timeout_s`` bounds the wait for
        the first chunk at the broker. While the broker refuses this cluster the stream ends
        at once with 503."""
        assert self._socket is not None, "start() first"
        request_id = self._next_id()
        if self.tracing is not None:
            meta = self.tracing.outgoing(meta, endpoint.service, endpoint.name)
        frames = Request(request_id, endpoint.service, endpoint.name,
                         max(int(timeout_s * 1000), 1), meta, body,
                         version=endpoint.version).to_frames()
        call = StreamCall(request_id, frames, self._socket.send, self._forget_stream)
        if self.refusal is not None:
            call.finish(error_reply(request_id, Status.NO_WORKER,
                                    f"the broker at {self.address} refuses this gateway: "
                                    f"{self.refusal}"))
            return call
        self._streams[request_id] = (call, endpoint)
        self._socket.send(frames)
        return call

    def _forget_stream(self, call: StreamCall) -> None:
        self._streams.pop(call.request_id, None)

    async def control(self, op: ControlOp, args: dict | None = None,
                      timeout_s: float = 2.0) -> dict:
        """Make a control call; raise TimeoutError if the broker does not answer, and
        BrokerRefused (a TimeoutError, after ``timeout_s``) if it refuses this cluster."""
        request_id = self._next_id()
        started = time.monotonic()
        reply = await self._exchange(
            request_id, Control(request_id, op, args or {}, self.cluster).to_frames(),
            timeout_s)
        refusal = _refusal(reply)
        if refusal is None:
            self.refusal = None
            return unpack_map(reply.meta, "control answer")
        if refusal != self.refusal:
            log.error("gateway: broker %s refused this gateway of cluster '%s': %s; not ready "
                      "while it does", self.address, self.cluster, refusal)
            self.refusal = refusal
        await asyncio.sleep(max(0.0, started + timeout_s - time.monotonic()))
        raise BrokerRefused(refusal)

    # ------------------------------------------------------------ schemas

    async def refresh_if_stale(self, max_age_s: float = 0.05) -> bool:
        """Ask the broker for the models again unless the last answer is younger than
        ``max_age_s``; return whether it asked."""
        if time.monotonic() - self._models_at <= max_age_s:
            return False
        await self.refresh_models()
        return True

    async def refresh_models(self) -> None:
        """Ask the broker for its MODELS answer and take it (:func:`known_services`); keep
        what is known if it does not answer in time or answers without services."""
        try:
            answer = await self.control(ControlOp.MODELS, timeout_s=1.0)
        except TimeoutError:
            return
        self._models_at = time.monotonic()
        try:
            models = ModelsAnswer.read(answer)
        except ProtocolError as exc:
            log.warning("gateway: ignoring %s", exc)
            return
        self.descriptions = known_services(self.descriptions, models)
        self._models = models

    async def settle(self, limit_s: float = SETTLE_LIMIT_S) -> bool:
        """Wait until :attr:`knows_every_service`, asking the broker for its models again as
        its start-up grace runs out (or once the pings know which broker answers); give up
        after ``limit_s`` or when the broker does not answer. Return whether it knows."""
        loop = asyncio.get_running_loop()
        until = loop.time() + limit_s
        while not self.knows_every_service and self.alive:
            models, left_s = self._models, until - loop.time()
            if left_s <= 0:
                return False
            wait_s = _SETTLE_STEP_S
            if models is not None and models.broker_id == self.broker_id:
                wait_s = max(models.settles_in_s - (time.monotonic() - self._models_at),
                             _SETTLE_STEP_S)
            await asyncio.sleep(min(wait_s, left_s))
            await self.refresh_if_stale()
        return self.knows_every_service

    # ------------------------------------------------------------ background

    def _on_message(self, frames: list) -> None:
        self.liveness.heard(time.monotonic())
        try:
            reply = parse_answer(frames)
        except ProtocolError as exc:
            log.warning("gateway: dropped malformed message from the broker (%s)", exc)
            return
        if isinstance(reply, Chunks):
            stream = self._streams.get(reply.key)
            if stream is not None:
                stream[0].arrive(reply)
            return
        entry = self._pending.get(reply.request_id)
        if entry is not None and not entry[0].done():
            entry[0].set_result(reply)
        elif entry is None and reply.request_id in self._streams:
            self._streams[reply.request_id][0].finish(reply)

    async def _ping(self) -> None:
        while True:
            try:
                answer = await self.control(ControlOp.PING, timeout_s=self.liveness.window_s)
            except BrokerRefused:
                continue
            except TimeoutError:
                log.warning("gateway: broker %s did not answer for %.1fs", self.address,
                            self.liveness.window_s)
                continue
            broker_id = str(answer.get("broker_id"))
            restarted = broker_id != self.broker_id
            if restarted:
                if self.broker_id is not None:
                    self._resend(broker_id)
                else:
                    log.info("gateway: connected to broker %s at %s", broker_id, self.address)
                self.broker_id = broker_id
            stale = time.monotonic() - self._models_at > self.schema_refresh_s
            if restarted or stale or not self.knows_every_service \
                    or not any(s.workers for s in self.descriptions.values()):
                await self.refresh_models()
            await asyncio.sleep(self.heartbeat_s)

    def _resend(self, broker_id: str) -> None:
        """The broker restarted: send the waiting requests again that may run twice, and
        answer the others (the old broker may have handed them to a worker)."""
        again: list[list] = []
        refused: list[tuple[bytes, asyncio.Future, EndpointDescription]] = []
        for request_id, (fut, frames, endpoint) in self._pending.items():
            if endpoint is None or fut.done():
                continue
            if endpoint.retry_on_worker_loss:
                again.append(frames)
            else:
                refused.append((request_id, fut, endpoint))
        lost: list[StreamCall] = []
        for stream, endpoint in self._streams.values():
            if stream.received == 0 and endpoint.retry_on_worker_loss:
                again.append(stream.frames)
            else:
                lost.append(stream)
        log.warning("gateway: broker restarted (%s -> %s), re-sending %d waiting requests, "
                    "failing %d that may not run twice", self.broker_id, broker_id, len(again),
                    len(refused) + len(lost))
        assert self._socket is not None
        for frames in again:
            self._socket.send(frames)
        for stream in lost:
            stream.finish(error_reply(stream.request_id, Status.INTERNAL, (
                "the broker restarted while the stream ran: it is incomplete" if stream.received
                else "the broker restarted before the stream began: it may or may not have "
                "started, and is not sent again as its endpoint does not allow running twice")))
        for request_id, fut, endpoint in refused:
            fut.set_result(error_reply(request_id, Status.INTERNAL, (
                f"the broker restarted while {endpoint.service}.{endpoint.name} waited for its "
                "answer: the call may or may not have run, and is not sent again as the "
                "endpoint does not allow running twice (retry_on_worker_loss=False)")))

    def pending_count(self) -> int:
        return len(self._pending) + len(self._streams)

    def describe(self) -> dict[str, Any]:
        return {"broker": self.address, "broker_id": self.broker_id, "alive": self.alive,
                "services": {name: desc.workers for name, desc in self.descriptions.items()}}
