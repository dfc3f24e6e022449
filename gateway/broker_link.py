"""The gateway's one DEALER connection to the broker, shared by every HTTP and gRPC call.

Requests are matched to replies by an 8-byte id. Every call has a deadline
here too, so a caller never waits forever even if the broker vanishes. The
link pings the broker to know it is alive; when the broker's id changes (it
restarted), requests still waiting are sent again to the new broker.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import struct
import time
from typing import Any

import zmq

from zeroserve.curve import Curve
from zeroserve.liveness import Liveness
from zeroserve.loopsocket import LoopSocket
from zeroserve.sockets import open_socket
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription
from zeroserve.wire.envelope import Command, ProtocolError, Status, split_command, unpack_map
from zeroserve.wire.frontend import (
    Control,
    ControlOp,
    Reply,
    Request,
    error_details,
    error_reply,
    parse_reply,
)

log = logging.getLogger("zeroserve.gateway")

# how long past a request's deadline the gateway waits for the broker's 504 before it answers
# 504 itself: less than the SDK's 1 s over HTTP, so that the caller gets an answer, not a timeout
_GRACE_S = 0.5


EndpointInfo = EndpointDescription  # the name the front ends' handlers know it by


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
        self.context = zmq.Context()
        self._socket: LoopSocket | None = None
        self._ids = itertools.count(1)
        self._pending: dict[bytes, tuple[asyncio.Future, list]] = {}
        self.broker_id: str | None = None
        # the broker's MODELS answer: each service's description, and its map (as
        # /v1/services and gRPC Services serve it)
        self.descriptions: dict[str, ServiceDescription] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self._endpoints: dict[tuple[str, str], EndpointDescription] = {}
        self._models_at = 0.0
        self._tasks: list[asyncio.Task] = []

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
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.cancel()
        if self._socket is not None:
            self._socket.close()
        self.context.term()

    @property
    def alive(self) -> bool:
        """Whether the broker was heard from within its liveness window (``zeroserve.liveness``)."""
        return self.refusal is None and self.liveness.alive(time.monotonic())

    # ------------------------------------------------------------ calls

    def _next_id(self) -> bytes:
        return struct.pack(">Q", next(self._ids))

    async def _exchange(self, request_id: bytes, frames: list, wait_s: float) -> Reply:
        """Send ``frames`` and await the reply; raise TimeoutError after ``wait_s``."""
        assert self._socket is not None, "start() first"
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending[request_id] = (fut, frames)
        expiry = loop.call_later(wait_s, _expire, fut)
        try:
            self._socket.send(frames)
            return await fut
        finally:
            expiry.cancel()
            self._pending.pop(request_id, None)

    async def request(self, service: str, endpoint: str, timeout_s: float, meta: bytes,
                      body: list, rows: int = 1, batch_key: bytes = b"") -> Reply:
        """Send one request; return the broker's reply (a 504 reply if none comes in time, a
        503 one without sending while the broker refuses this cluster)."""
        request_id = self._next_id()
        if self.refusal is not None:
            return error_reply(request_id, Status.NO_WORKER,
                               f"the broker at {self.address} refuses this gateway: "
                               f"{self.refusal}")
        frames = Request(request_id, service, endpoint, max(int(timeout_s * 1000), 1), meta,
                           body, rows, batch_key).to_frames()
        try:
            return await self._exchange(request_id, frames, timeout_s + _GRACE_S)
        except TimeoutError:
            return error_reply(request_id, Status.DEADLINE_EXCEEDED,
                                 "no answer from the broker before the deadline")

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

    def cached_endpoint(self, service: str, name: str) -> EndpointDescription | None:
        """The schema of an endpoint if this gateway has seen it (no broker call)."""
        return self._endpoints.get((service, name))

    async def endpoint(self, service: str, name: str) -> EndpointDescription | None:
        """The schema of an endpoint, refreshing from the broker once if unknown."""
        info = self._endpoints.get((service, name))
        if info is None and await self.refresh_if_stale():
            info = self._endpoints.get((service, name))
        return info

    async def refresh_if_stale(self, max_age_s: float = 0.05) -> bool:
        """Ask the broker for the models again unless the last answer is younger than
        ``max_age_s``; return whether it asked."""
        if time.monotonic() - self._models_at <= max_age_s:
            return False
        await self.refresh_models()
        return True

    async def refresh_models(self) -> None:
        try:
            answer = await self.control(ControlOp.MODELS, timeout_s=1.0)
        except TimeoutError:
            return
        self._models_at = time.monotonic()
        services = answer.get("services") if isinstance(answer, dict) else None
        if not isinstance(services, dict):
            log.warning("gateway: ignoring a MODELS answer without services")
            return
        described = {}
        for name, desc in services.items():
            try:
                described[name] = ServiceDescription.from_map(name, desc)
            except ProtocolError as exc:
                log.warning("gateway: ignoring the bad description of service %s: %s", name, exc)
        self.descriptions = described
        self.services = {name: desc.to_map() for name, desc in described.items()}
        self._endpoints.update({(desc.service, desc.name): desc for service in described.values()
                                for desc in service.endpoints.values()})

    # ------------------------------------------------------------ background

    def _on_message(self, frames: list) -> None:
        self.liveness.heard(time.monotonic())
        try:
            command, rest = split_command(frames)
            if command is not Command.REPLY:
                raise ProtocolError(f"unexpected {command.name} from the broker")
            reply = parse_reply(rest)
        except ProtocolError as exc:
            log.warning("gateway: dropped malformed message from the broker (%s)", exc)
            return
        entry = self._pending.get(reply.request_id)
        if entry is not None and not entry[0].done():
            entry[0].set_result(reply)

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
            if broker_id != self.broker_id:
                if self.broker_id is not None:
                    await self._resend(broker_id)
                else:
                    log.info("gateway: connected to broker %s at %s", broker_id, self.address)
                self.broker_id = broker_id
            stale = time.monotonic() - self._models_at > self.schema_refresh_s
            if stale or not any(s.get("workers") for s in self.services.values()):
                await self.refresh_models()
            await asyncio.sleep(self.heartbeat_s)

    async def _resend(self, broker_id: str) -> None:
        waiting = [frames for fut, frames in self._pending.values()
                   if not fut.done() and frames[1] == Command.REQUEST.value]
        log.warning("gateway: broker restarted (%s -> %s), re-sending %d waiting requests",
                    self.broker_id, broker_id, len(waiting))
        assert self._socket is not None
        for frames in waiting:
            self._socket.send(frames)

    def pending_count(self) -> int:
        return len(self._pending)

    def describe(self) -> dict[str, Any]:
        return {"broker": self.address, "broker_id": self.broker_id, "alive": self.alive,
                "services": {name: desc.workers for name, desc in self.descriptions.items()}}
