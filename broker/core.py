"""The broker's routing logic, without sockets: messages and clock ticks in, messages out.

:class:`BrokerCore` receives the frames that arrived on the frontend (from
gateways) and the backend (from workers) together with the current time, and
emits frames through two send callables. The daemon around it owns the
sockets and the clock. Payload frames are forwarded as received, never decoded.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from batching.policy import BatchLimits, BatchPolicy
from batching.queue import EndpointQueue, Pending
from broker.admission import ClusterAdmission
from broker.jobs.desk import JobDesk
from broker.registry import WorkerRegistry, WorkerState
from broker.stats import EndpointStats, StreamStats
from broker.traffic import TrafficSplits
from zeroserve.curve import WORKER_CONTROL_OPS
from zeroserve.traffic import TrafficError
from zeroserve.wire.backend import (
    Batch,
    BatchItem,
    Ready,
    Result,
    disconnect,
    heartbeat,
    parse_ready,
    parse_result,
    parse_waiting,
)
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription
from zeroserve.wire.envelope import Command, ProtocolError, Status, pack_map, split_command
from zeroserve.wire.frontend import (
    DEPENDENCY_PREFIX,
    MAX_STAGES,
    Control,
    ControlOp,
    Reply,
    Request,
    endpoint_stats_key,
    error_reply,
    parse_control,
    parse_request,
)
from zeroserve.wire.stream import (
    Cancel,
    Chunks,
    Credit,
    batch_id_of,
    batch_key,
    parse_cancel,
    parse_chunks,
    parse_credit,
)

if TYPE_CHECKING:
    from zeroserve.tracing.spans import BrokerTracer

log = logging.getLogger("zeroserve.broker")

Send = Callable[[list], None]


@dataclass(eq=False)
class Endpoint:
    """The queue, batching policy and statistics of one service endpoint at one version, and
    its description with the batching limits this broker applies (what MODELS answers)."""

    service: str
    name: str
    queue: EndpointQueue
    policy: BatchPolicy
    description: EndpointDescription
    stats: EndpointStats = field(default_factory=EndpointStats)
    streams: StreamStats = field(default_factory=StreamStats)
    wake_at: float | None = None

    @property
    def version(self) -> int:
        return self.description.version


@dataclass(eq=False)
class InFlight:
    """A batch sent to a worker and not yet answered; for a streaming endpoint, the one
    stream it runs (``chunks``: how many the broker has forwarded)."""

    worker: WorkerState
    endpoint: Endpoint
    items: list  # list[Pending]
    # item key -> Pending, not yet answered. A key names a request within its batch (gateways
    # number their requests each from 1, so two gateways' ids may meet in one batch)
    waiting: dict = field(default_factory=dict)
    dispatched: float = 0.0
    chunks: int = 0

    @property
    def streams(self) -> bool:
        return self.endpoint.description.streams

    def __post_init__(self) -> None:
        self.waiting = {item_key(i): item for i, item in enumerate(self.items)}


def stages_of(flight: InFlight, item: Pending, exec_s: float, called: list | None) -> list:
    """The stages that answered ``item`` of ``flight``: its own (service, endpoint, version,
    worker, batch size, queue wait and execution in ms) first, then those of the calls it made,
    each naming its caller; at most MAX_STAGES."""
    name = f"{flight.endpoint.service}.{flight.endpoint.name}"
    own = {"service": flight.endpoint.service, "endpoint": flight.endpoint.name,
           "version": flight.endpoint.version, "worker": flight.worker.worker_id,
           "batch": len(flight.items),
           "queue_ms": round(1000 * (flight.dispatched - item.arrived), 3),
           "exec_ms": round(1000 * exec_s, 3)}
    nested = [{"caller": name, **stage} if "caller" not in stage else stage
              for stage in (called or ())]
    return [own, *nested][:MAX_STAGES]


def item_key(index: int) -> bytes:
    """The id that the ``index``-th request of a BATCH carries, and its RESULT item answers."""
    return index.to_bytes(4, "big")


@dataclass(frozen=True)
class BrokerConfig:
    """What the core needs from the settings."""

    heartbeat_s: float = 1.0
    liveness: int = 3
    max_queue: int = 1000
    retry_after_s: int = 1
    max_dispatches: int = 3  # broker.max_dispatches
    max_timeout_ms: int = 600_000
    batching_overrides: dict = field(default_factory=dict)
    cluster: str = "default"  # cluster.name: peers naming another cluster are refused

    @property
    def liveness_s(self) -> float:
        return self.heartbeat_s * self.liveness

    @property
    def grace_s(self) -> float:
        """How long after start a service no worker has registered yet may still be one whose
        workers have not registered again: a request for it waits (it is not answered 404),
        and MODELS answers say they are provisional."""
        return self.liveness_s * 2


class BrokerCore:
    """Routes requests from gateways to workers and replies back; see the module docstring."""

    def __init__(self, config: BrokerConfig, send_front: Send, send_back: Send,
                 now: float, wall: float = 0.0) -> None:
        self.config = config
        self.wall_offset = wall - now if wall else 0.0  # wall time = core time + offset
        self._send_front = send_front
        self._send_back = send_back
        self.broker_id = os.urandom(4).hex()
        self.started = now
        self.registry = WorkerRegistry(config.liveness_s)
        self._worker_info: dict[bytes, dict] = {}  # identity -> its READY's info (STATS shows)
        self.admission = ClusterAdmission(config.cluster)
        self.endpoints: dict[tuple[str, str, int], Endpoint] = {}  # (service, name, version)
        self._by_service: dict[tuple[str, int], list[Endpoint]] = {}  # (service, version)
        self._in_flight: dict[int, InFlight] = {}
        self._streams: dict[tuple[bytes, bytes], int] = {}  # (gateway, request id) -> batch id
        # requests for not-yet-known services: (service, version asked, endpoint, request)
        self._limbo: list[tuple[str, int, str, Pending]] = []
        self.traffic = TrafficSplits()  # the operator's splits of version-less calls
        # batch ids start at a random point of their own for each broker, so that a worker's
        # RESULT for a batch of the broker before a restart never answers a batch of this one
        self._next_batch = int.from_bytes(os.urandom(4), "big") >> 1 << 32
        self._next_heartbeat = now
        self.dropped = 0
        self.worker_control_refused = 0
        self.dependency_calls: Counter[tuple[str, str]] = Counter()  # (caller, callee) -> calls
        self.jobs: JobDesk | None = None  # durable async jobs; set by the daemon
        # where the metrics a worker's HEARTBEAT carries go (worker id, service, the frames
        # after the command); set by the daemon when it serves metrics
        self.worker_metrics: Callable[[str, str, Sequence], None] | None = None
        self.tracing: BrokerTracer | None = None  # spans of queues and batches; set when on

    # ------------------------------------------------------------ frontend

    def on_frontend(self, frames: Sequence, now: float, role: str = "") -> None:
        """Handle one message from a gateway: ``[identity, ZS1, command, ...]``, the identity
        and routing frames as bytes, payload frames as bytes or zmq.Frame. ``role``: the
        sender's CURVE key role ("" without CURVE); a worker's key may send requests (calls
        of other services) but only the control calls of ``WORKER_CONTROL_OPS``."""
        if len(frames) < 3:
            return self._drop("frontend", "too few frames")
        gateway = frames[0]
        try:
            command, rest = split_command(frames[1:])
            if command is Command.REQUEST:
                self._on_request(gateway, parse_request(rest), now)
            elif command is Command.CONTROL:
                ctl = parse_control(rest)
                if role == "worker" and ctl.op.value not in WORKER_CONTROL_OPS:
                    return self._refuse_worker_control(ctl)
                self._on_control(gateway, ctl, now)
            elif command is Command.CREDIT:
                self._on_credit(gateway, parse_credit(rest))
            elif command is Command.CANCEL:
                self._on_cancel(gateway, parse_cancel(rest), now)
            else:
                raise ProtocolError(f"command {command.name} is not valid on the frontend")
        except ProtocolError as exc:
            self._drop("frontend", str(exc))

    def _refuse_worker_control(self, ctl: Control) -> None:
        """Drop a control call made with a worker's key, unanswered (as a key refused on a
        channel gets no answer); logged for the first ten, then every thousandth."""
        self.worker_control_refused += 1
        if self.worker_control_refused <= 10 or self.worker_control_refused % 1000 == 0:
            log.warning("broker: dropped a %s control call made with a worker key (a worker "
                        "key may not make control calls on the frontend); %d so far",
                        ctl.op.value, self.worker_control_refused)

    def _reply(self, gateway: bytes, reply: Reply) -> None:
        self._send_front([gateway, *reply.to_frames()])

    def _on_request(self, gateway: bytes, req: Request, now: float) -> None:
        if gateway.startswith(DEPENDENCY_PREFIX):  # a worker's dependency link
            caller = gateway[len(DEPENDENCY_PREFIX):].rpartition(b":")[0].decode(
                errors="replace")
            self.dependency_calls[(caller, req.service)] += 1
        timeout_s = min(req.timeout_ms, self.config.max_timeout_ms) / 1000.0
        item = Pending(req.request_id, gateway, now + timeout_s, now, [req.meta, *req.body],
                       max(req.rows, 1), req.batch_key, req.stages)
        self._admit(req.service, req.version, req.endpoint, item, now)

    def _admit(self, service: str, asked: int, endpoint_name: str, item: Pending,
               now: float) -> None:
        """Queue ``item`` for ``service`` at version ``asked`` (0: the latest served)."""
        version = asked or self.registry.latest(service) or 0
        endpoint = self.endpoints.get((service, endpoint_name, version))
        if endpoint is None:
            known = self.registry.services.get(service, {})
            if version in known:
                return self._reply(item.gateway, error_reply(
                    item.request_id, Status.NOT_FOUND,
                    f"service '{service}' has no endpoint '{endpoint_name}'"))
            if now - self.started < self.config.grace_s:
                self._limbo.append((service, asked, endpoint_name, item))
                return None
            return self._reply(item.gateway, error_reply(
                item.request_id, Status.NOT_FOUND,
                f"service '{service}' has no version {version}" if known
                else f"unknown service '{service}'"))
        if not endpoint.queue.push(item):
            endpoint.stats.rejected += 1
            return self._reply(item.gateway, error_reply(
                item.request_id, Status.QUEUE_FULL,
                f"queue for {service}/{endpoint_name} is full ({endpoint.queue.capacity} waiting)",
                retry_after_s=self.config.retry_after_s))
        endpoint.policy.arrived(now, item.rows)
        self._pump(service, version, now)

    def _on_control(self, gateway: bytes, ctl: Control, now: float) -> None:
        if not self.admission.admits(ctl.cluster):
            refusal = self.admission.refuse_call(ctl.cluster)
            if refusal.log:
                log.warning(refusal.log_line)
            return self._reply(gateway, error_reply(
                ctl.request_id, Status.BAD_REQUEST, refusal.message,
                code=int(Status.BAD_REQUEST), cluster=self.admission.name))
        if ctl.op.value.startswith("job."):
            if self.jobs is not None:
                return self.jobs.on_control(gateway, ctl)
            return self._reply(gateway, error_reply(
                ctl.request_id, Status.NOT_FOUND, "this broker runs no jobs",
                code=int(Status.NOT_FOUND)))
        if ctl.op is ControlOp.PING:
            answer = {"broker_id": self.broker_id, "uptime_s": now - self.started,
                      "job_store": self.jobs.store_health() if self.jobs else None}
        elif ctl.op is ControlOp.MODELS:
            answer = {"broker_id": self.broker_id, "uptime_s": now - self.started,
                      "grace_s": self.config.grace_s, "services": {
                name: self._describe(name, versions).to_map()
                for name, versions in self.registry.services.items()},
                "shm": self._shm_namespaces()}
        elif ctl.op is ControlOp.SET_TRAFFIC:
            return self._set_traffic(gateway, ctl)
        else:
            answer = self.stats(now)
        self._reply(gateway, Reply(ctl.request_id, Status.OK, pack_map(answer)))

    def _set_traffic(self, gateway: bytes, ctl: Control) -> None:
        """Set or clear a service's traffic split (``{service, weights}``), logged; a bad
        one is answered 400 (404 for an unknown service) with the reason."""
        service = ctl.args.get("service")
        versions = self.registry.services.get(service) if isinstance(service, str) else None
        if versions is None or not isinstance(service, str):
            return self._reply(gateway, error_reply(
                ctl.request_id, Status.NOT_FOUND, f"unknown service {service!r}",
                code=int(Status.NOT_FOUND)))
        try:
            change = self.traffic.set(service, ctl.args.get("weights", {}), versions)
        except TrafficError as exc:
            return self._reply(gateway, error_reply(
                ctl.request_id, Status.BAD_REQUEST, f"traffic split of '{service}': {exc}",
                code=int(Status.BAD_REQUEST)))
        log.info(change.log_line)
        self._reply(gateway, Reply(ctl.request_id, Status.OK, pack_map({
            "service": service, "traffic": {str(v): p for v, p in change.split.items()}})))

    # ------------------------------------------------------------ backend

    def on_backend(self, frames: Sequence, now: float) -> None:
        """Handle one message from a worker: ``[identity, ZS1, command, ...]`` (as above)."""
        if len(frames) < 3:
            return self._drop("backend", "too few frames")
        identity = frames[0]
        try:
            command, rest = split_command(frames[1:])
            if command is Command.READY:
                return self._on_ready(identity, parse_ready(rest), now)
            worker = self.registry.touch(identity, now)
            if worker is None:
                # unknown (e.g. this broker restarted): ask it to register again
                self._send_back([identity, *disconnect()])
                if command is Command.RESULT:
                    log.info("broker: dropped a result from unregistered worker %s",
                             identity.hex())
                return None
            if command is Command.RESULT:  # the most frequent message first
                self._on_result(worker, parse_result(rest), now)
            elif command is Command.STREAM_CHUNK:
                self._on_chunks(worker, parse_chunks(rest), now)
            elif command is Command.WAITING:
                batch_id, is_waiting = parse_waiting(rest)
                self.registry.mark_waiting(worker, batch_id, is_waiting)
                self._pump(worker.service, worker.version, now)
            elif command is Command.DISCONNECT:
                self._on_disconnect(worker, now)
            elif command is Command.HEARTBEAT:
                if rest and self.worker_metrics is not None:  # kept, decoded at a scrape
                    self.worker_metrics(worker.worker_id, worker.service, rest)
            else:
                raise ProtocolError(f"command {command.name} is not valid on the backend")
        except ProtocolError as exc:
            self._drop("backend", str(exc))

    def _on_ready(self, identity: bytes, ready: Ready, now: float) -> None:
        if not self.admission.admits(ready.cluster):
            refusal = self.admission.refuse_worker(identity, ready.worker_id, ready.cluster)
            if refusal.log:
                log.warning(refusal.log_line)
            if refusal.answer:
                self._send_back([identity, *disconnect(refusal.message)])
            return None
        old = self.registry.remove(identity)
        if old is not None:
            self._recover(old, now, "registered again")
        for desc in ready.endpoints.values():
            self._endpoint(desc)
        worker = self.registry.register(identity, ready.worker_id, ready.service,
                                        ready.endpoints, ready.slots, now, ready.version)
        self._send_back([identity, *heartbeat()])  # the worker hears from us at once
        if self.jobs is not None:
            self.jobs.lane_ready(identity, ready)
        log.info("broker: worker %s joined, serving %s version %d (%s) with %d slots",
                 ready.worker_id, ready.service, ready.version,
                 ", ".join(sorted(ready.endpoints)), ready.slots)
        previous = self.registry.other_connection(worker)
        if previous is not None:
            self._take_over(previous, worker, ready.holds, now)
        self._worker_info = {w.identity: self._worker_info.get(w.identity, {})
                             for w in self.registry} | {identity: ready.info}
        waiting, self._limbo = self._limbo, []
        for service, asked, endpoint, item in waiting:
            if service == ready.service:
                self._admit(service, asked, endpoint, item, now)
            else:
                self._limbo.append((service, asked, endpoint, item))
        self._pump(ready.service, ready.version, now)

    def _describe(self, service: str, versions: dict[int, dict[str, EndpointDescription]]
                  ) -> ServiceDescription:
        """``service`` as MODELS answers: each version with the endpoints of its latest
        READY with this broker's limits, its tasks and its workers; the latest version's at
        the top, with the workers of every version, every version's description (when there
        are several) and the traffic split (see ``ServiceDescription``)."""
        tasks = self.jobs.tasks_of(service) if self.jobs is not None else {}
        described = {version: ServiceDescription(
            service, {name: self.endpoints[(service, name, version)].description
                      for name in declared},
            tasks, self.registry.count(service, version), version)
            for version, declared in sorted(versions.items())}
        latest = described[self.registry.latest(service) or max(described)]
        return replace(latest, workers=self.registry.count(service),
                       versions=described if len(described) > 1 else {},
                       traffic=self.traffic.of(service))

    def _shm_namespaces(self) -> dict[str, list[list]]:
        """Per service, the distinct ``[shm_namespace, shm_key_prefix]`` of its workers' READY
        info (None for what one lacks): where gateways may send shared memory references."""
        seen: dict[str, set[tuple]] = {}
        for w in self.registry:
            info = self._worker_info.get(w.identity, {})
            seen.setdefault(w.service, set()).add(tuple(
                v if isinstance(v, str) else None
                for v in (info.get("shm_namespace"), info.get("shm_key_prefix"))))
        return {service: [list(pair) for pair in pairs] for service, pairs in seen.items()}

    def _endpoint(self, desc: EndpointDescription) -> Endpoint:
        """The endpoint a worker described, made or updated; ``batching.overrides`` replace
        the batching limits that the code declares."""
        key = (desc.service, desc.name, desc.version)
        if desc.batchable:
            override = self.config.batching_overrides.get(f"{desc.service}.{desc.name}", {})
            limits = BatchLimits(
                max_batch_size=int(override.get("max_batch_size", desc.max_batch_size)),
                max_latency_s=float(override.get("max_latency_ms", desc.max_latency_ms))
                / 1000.0)
            desc = replace(desc, max_batch_size=limits.max_batch_size,
                           max_latency_ms=limits.max_latency_s * 1000.0)
        else:
            limits = BatchLimits(max_batch_size=1, max_latency_s=0.0)
        endpoint = self.endpoints.get(key)
        if endpoint is None:
            endpoint = Endpoint(desc.service, desc.name, EndpointQueue(self.config.max_queue),
                                BatchPolicy(limits), desc)
            self.endpoints[key] = endpoint
            self._by_service.setdefault((desc.service, desc.version), []).append(endpoint)
        else:
            if endpoint.policy.limits != limits:
                endpoint.policy = BatchPolicy(limits, endpoint.policy.model)
            endpoint.description = desc
        return endpoint

    def _on_result(self, worker: WorkerState, result: Result, now: float) -> None:
        flight = self._in_flight.get(result.batch_id)
        # a worker that reconnected answers the batches it took before on its new connection
        # (``_take_over`` moved them); any other sender's result is dropped and the batch
        # stays with its worker (requeued if that one is evicted)
        if flight is None or flight.worker is not worker:
            log.info("broker: result for unknown batch %d from worker %s dropped",
                     result.batch_id, worker.worker_id)
            return None
        del self._in_flight[result.batch_id]
        self.registry.release(flight.worker, result.batch_id)
        if self.tracing is not None:
            self.tracing.answered(result.batch_id, now)
        rows = sum(it.rows for it in flight.items)
        if flight.streams:  # a stream's time is its length, not what a batch costs
            self._end_stream(flight, now)
        else:
            flight.endpoint.policy.observe(rows, result.exec_s)
        stats = flight.endpoint.stats
        stats.record_batch(rows, len(flight.items), result.exec_s)
        times = (result.input_s, result.infer_s, result.output_s)
        answered_ok = False
        for ri in result.items:
            item = flight.waiting.pop(ri.request_id, None)
            if item is not None:  # None: answered already (its deadline passed)
                stats.record_status(ri.status, now - item.arrived)
                if ri.status is Status.OK:
                    answered_ok = True
                    stats.inference.record_ok(item.rows, flight.dispatched - item.arrived, times)
                self._reply(item.gateway, Reply(
                    item.request_id, ri.status, ri.frames[0], ri.frames[1:],
                    stages_of(flight, item, result.exec_s, ri.stages) if item.stages else None))
        if answered_ok:
            stats.inference.record_execution(rows, times, now)
        if worker.draining and not worker.in_flight:
            self.registry.remove(worker.identity)
            self._send_back([worker.identity, *disconnect()])
            log.info("broker: worker %s drained and left", worker.worker_id)
            if self.jobs is not None:
                self.jobs.lane_gone(worker.identity, lost=False)
        self._pump(worker.service, worker.version, now)

    # ------------------------------------------------------------ streams

    def _on_chunks(self, worker: WorkerState, chunks: Chunks, now: float) -> None:
        """Forward a stream's chunks to its gateway, unless its caller is gone."""
        flight = self._in_flight.get(batch_id_of(chunks.key))
        if flight is None or not flight.streams or flight.worker is not worker:
            return None  # a stream that ended or was never this worker's
        item = flight.waiting.get(item_key(0))
        if item is None:
            return None  # answered already (cancelled, or its deadline passed)
        if flight.chunks == 0:
            flight.endpoint.streams.record_first_chunk(now - item.arrived)
        flight.chunks += len(chunks.bodies)
        flight.endpoint.streams.chunks += len(chunks.bodies)
        self._send_front([item.gateway, *Chunks(item.request_id, chunks.first, chunks.bodies)
                          .to_frames()])

    def _on_credit(self, gateway: bytes, credit: Credit) -> None:
        """Pass a reader's credit on to the worker that runs its stream."""
        batch_id = self._streams.get((gateway, credit.key), -1)
        flight = self._in_flight.get(batch_id)
        if flight is None:
            return None
        self._send_back([flight.worker.identity, *Credit(
            batch_key(batch_id), credit.chunks, credit.nbytes).to_frames(Command.STREAM_CREDIT)])

    def _on_cancel(self, gateway: bytes, cancel: Cancel, now: float) -> None:
        """The caller went away: a waiting request leaves its queue; a running stream's
        worker is told to close the generator (the slot frees when it answers the batch)."""
        batch_id = self._streams.get((gateway, cancel.key))
        if batch_id is not None:
            flight = self._in_flight.get(batch_id)
            if flight is not None and flight.waiting.pop(item_key(0), None) is not None:
                flight.endpoint.streams.cancelled += 1
                flight.endpoint.stats.record_status(Status.CANCELLED)
                self._send_back([flight.worker.identity, *Cancel(
                    batch_key(batch_id), item_key(0)).to_frames(Command.STREAM_CANCEL)])
            return None
        for endpoint in self.endpoints.values():
            item = endpoint.queue.remove(gateway, cancel.key)
            if item is not None:
                endpoint.stats.record_status(Status.CANCELLED)
                return None
        self._limbo = [entry for entry in self._limbo
                       if (entry[3].gateway, entry[3].request_id) != (gateway, cancel.key)]

    def _end_stream(self, flight: InFlight, now: float) -> None:
        for item in flight.items:
            self._streams.pop((item.gateway, item.request_id), None)
        flight.endpoint.streams.record_end(now - flight.dispatched)

    def _stop_stream(self, batch_id: int, flight: InFlight) -> None:
        """Tell the worker to close a stream whose caller has been answered already."""
        self._send_back([flight.worker.identity, *Cancel(
            batch_key(batch_id), item_key(0)).to_frames(Command.STREAM_CANCEL)])

    def _on_disconnect(self, worker: WorkerState, now: float) -> None:
        self.registry.drain(worker.identity)
        if self.jobs is not None:
            self.jobs.lane_draining(worker.identity)
        log.info("broker: worker %s is draining (%d batches in flight)", worker.worker_id,
                 len(worker.in_flight))
        if not worker.in_flight:
            self.registry.remove(worker.identity)
            self._send_back([worker.identity, *disconnect()])
            if self.jobs is not None:
                self.jobs.lane_gone(worker.identity, lost=False)

    # ------------------------------------------------------------ dispatch

    def _pump(self, service: str, version: int, now: float) -> None:
        """Dispatch waiting work of ``service`` at ``version`` while its workers have free
        slots."""
        endpoints = [e for e in self._by_service.get((service, version), ()) if len(e.queue)]
        if not endpoints or not self.registry.has_free(service, version):
            return
        free = self.registry.free_slots(service, version)
        busy = self.registry.busy_slots(service, version)
        while free > 0:
            best, best_rows, best_deadline = None, 0, float("inf")
            for endpoint in endpoints:
                head = endpoint.queue.head()
                if head is None:
                    continue
                decision = endpoint.policy.decide(endpoint.queue, now, free, busy)
                endpoint.wake_at = decision.wake_at
                if decision.take_rows > 0 and head.deadline < best_deadline:
                    best, best_rows, best_deadline = endpoint, decision.take_rows, head.deadline
            if best is None:
                return
            self._dispatch(best, best.queue.take(
                1 if best.description.streams else best_rows), now)
            free, busy = free - 1, busy + 1

    def _dispatch(self, endpoint: Endpoint, items: list, now: float) -> None:
        batch_id = self._next_batch
        self._next_batch += 1
        worker = self.registry.acquire(endpoint.service, batch_id, endpoint.version)
        assert worker is not None, "dispatch without a free worker"
        flight = self._in_flight[batch_id] = InFlight(worker, endpoint, items, dispatched=now)
        for it in items:
            it.attempts += 1
            endpoint.stats.record_wait(now - it.arrived)
        if flight.streams:
            endpoint.streams.started += 1
            self._streams[(items[0].gateway, items[0].request_id)] = batch_id
        batch = Batch(batch_id, endpoint.name, [
            BatchItem(key, max(int((it.deadline - now) * 1000), 1), it.frames, it.stages)
            for key, it in flight.waiting.items()])
        self._send_back([worker.identity, *batch.to_frames()])
        if self.tracing is not None:
            self.tracing.dispatched(batch_id, endpoint.service, endpoint.name, worker.worker_id,
                                    items, now, flight.streams)

    # ------------------------------------------------------------ time

    def on_tick(self, now: float) -> None:
        """Expire deadlines, evict silent workers, send heartbeats, run batching timers."""
        for endpoint in self.endpoints.values():
            expired = endpoint.queue.pop_expired(now)
            if expired:
                self._expire_waiting(endpoint, expired)
        for batch_id, flight in self._in_flight.items():
            if flight.chunks:
                continue  # a stream's deadline is its first chunk's; its limits are the gateway's
            late = [(key, item) for key, item in flight.waiting.items()
                    if item.deadline <= now]
            for key, item in late:
                del flight.waiting[key]
                flight.endpoint.stats.record_status(Status.DEADLINE_EXCEEDED, now - item.arrived)
                self._reply(item.gateway, error_reply(
                    item.request_id, Status.DEADLINE_EXCEEDED,
                    "deadline exceeded before the stream's first chunk" if flight.streams
                    else "deadline exceeded while the request was executing"))
                if flight.streams:
                    self._stop_stream(batch_id, flight)
        for worker in self.registry.expired(now):
            self.registry.remove(worker.identity)
            if self.jobs is not None:
                self.jobs.lane_gone(worker.identity, lost=True)
            silent_s = worker.liveness.silent_for(now)
            self._recover(worker, now, f"missed heartbeats for {silent_s:.1f}s")
        if self._limbo and now - self.started >= self.config.grace_s:
            waiting, self._limbo = self._limbo, []
            for service, asked, endpoint_name, item in waiting:
                self._admit(service, asked, endpoint_name, item, now)
        if self.jobs is not None:
            self.jobs.on_tick()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.config.heartbeat_s
            for worker in self.registry:
                self._send_back([worker.identity, *heartbeat()])
        for (service, version), endpoints in self._by_service.items():
            if any(e.wake_at is not None and e.wake_at <= now for e in endpoints):
                self._pump(service, version, now)

    def _expire_waiting(self, endpoint: Endpoint, expired: list) -> None:
        workers = self.registry.count(endpoint.service, endpoint.version)
        for item in expired:
            if workers:
                status, message = Status.DEADLINE_EXCEEDED, (
                    f"deadline exceeded after {1000 * (item.deadline - item.arrived):.0f} ms "
                    "waiting in the queue; the request was not executed")
            else:
                status, message = Status.NO_WORKER, (
                    f"no worker serves '{endpoint.service}' (waited until the deadline)")
            endpoint.stats.record_status(status, item.deadline - item.arrived)
            self._reply(item.gateway, error_reply(item.request_id, status, message))

    def _take_over(self, previous: WorkerState, worker: WorkerState, holds: frozenset[int],
                   now: float) -> None:
        """``worker`` is ``previous`` on a new connection (the same process): the batches it
        still ``holds`` stay in flight on the new one; the others were lost with the old
        connection and are requeued at once, not when the old identity would be evicted."""
        self.registry.remove(previous.identity)
        if self.jobs is not None:
            self.jobs.lane_gone(previous.identity, lost=True)  # forgets it: its lane moved
        kept = [batch_id for batch_id in previous.in_flight
                if batch_id in holds and batch_id in self._in_flight]
        for batch_id in kept:
            self._in_flight[batch_id].worker = worker
            self.registry.adopt(worker, batch_id, batch_id in previous.waiting)
        previous.in_flight.difference_update(kept)
        log.info("broker: worker %s reconnected, %d of its batches still run on it",
                 worker.worker_id, len(kept))
        if previous.in_flight:
            self._recover(previous, now, "reconnected without them")

    def _recover(self, worker: WorkerState, now: float, why: str) -> None:
        """Requeue (or fail) the unanswered requests of a worker that is gone."""
        requeued = failed = 0
        for batch_id in list(worker.in_flight):
            flight = self._in_flight.pop(batch_id, None)
            if flight is None:
                continue
            if self.tracing is not None:
                self.tracing.answered(batch_id, now, f"worker {worker.worker_id} lost: {why}")
            if flight.streams:
                self._end_stream(flight, now)
                if flight.chunks and flight.waiting:  # never sent again: a client has chunks
                    failed += 1
                    flight.endpoint.streams.lost += 1
                    item = flight.waiting.pop(item_key(0))
                    self._reply(item.gateway, error_reply(
                        item.request_id, Status.INTERNAL,
                        f"worker {worker.worker_id} was lost mid-stream after {flight.chunks} "
                        "chunks: the stream is incomplete"))
            for item in flight.waiting.values():
                retry = (flight.endpoint.description.retry_on_worker_loss and item.deadline > now
                         and item.attempts < self.config.max_dispatches)
                if retry:
                    flight.endpoint.queue.push(item, force=True)
                    requeued += 1
                else:
                    failed += 1
                    self._reply(item.gateway, error_reply(
                        item.request_id, Status.INTERNAL,
                        f"worker {worker.worker_id} was lost while running the request"))
        worker.in_flight.clear()
        log.warning("broker: evicted worker %s (%s), requeued %d requests, failed %d",
                    worker.worker_id, why, requeued, failed)
        self._pump(worker.service, worker.version, now)

    def next_wake(self, now: float) -> float:
        """Seconds until ``on_tick`` has something to do at the latest."""
        wake = self._next_heartbeat
        job_wake = self.jobs.next_wake() if self.jobs is not None else None
        if job_wake is not None:
            wake = min(wake, now + job_wake)
        for endpoint in self.endpoints.values():
            if endpoint.wake_at is not None:
                wake = min(wake, endpoint.wake_at)
        return max(0.0, min(wake - now, 0.02))

    # ------------------------------------------------------------ reporting

    def stats(self, now: float) -> dict:
        """Workers, queues, per-endpoint batching figures and the jobs, for the STATS control
        call."""
        return {
            "broker_id": self.broker_id,
            "uptime_s": now - self.started,
            "workers": [{"worker_id": w.worker_id, "service": w.service, "version": w.version,
                         "slots": w.slots,
                         "in_flight": len(w.in_flight), "draining": w.draining,
                         "last_heartbeat_s": w.liveness.silent_for(now),
                         "info": self._worker_info.get(w.identity, {})} for w in self.registry],
            "endpoints": {endpoint_stats_key(e.service, e.name, e.version): {
                "version": e.version, "queued": len(e.queue),
                **e.stats.summary(self.wall_offset),
                **({"streams": e.streams.summary(self._active_streams(e))}
                   if e.description.streams else {}),
                "max_batch_size": e.policy.limits.max_batch_size,
                "max_latency_ms": e.policy.limits.max_latency_s * 1000,
                "latency_model": {"a_s_per_row": e.policy.model.a, "b_s": e.policy.model.b,
                                  "samples": e.policy.model.samples}}
                for e in self.endpoints.values()},
            "malformed_dropped": self.dropped,
            "dependency_calls": [{"caller": caller, "callee": callee, "calls": n}
                                 for (caller, callee), n in sorted(self.dependency_calls.items())],
            "jobs": self.jobs.stats() if self.jobs is not None else {},
        }

    def _active_streams(self, endpoint: Endpoint) -> int:
        return sum(1 for f in self._in_flight.values() if f.endpoint is endpoint and f.waiting)

    def _drop(self, socket: str, reason: str) -> None:
        self.dropped += 1
        if self.dropped <= 10 or self.dropped % 1000 == 0:
            log.warning("broker: dropped malformed message on %s (%s); %d dropped so far",
                        socket, reason, self.dropped)

