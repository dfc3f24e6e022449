"""Which workers serve what, their free slots (credits) and their liveness.

Pure: times are floats passed in by the caller. Load balancing is credit
based: a worker advertises slots, only workers with a free slot get work, and
among them the least recently used goes first. Each worker serves one version of its
service; work for a version goes only to workers of that version.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from zeroserve.liveness import Liveness
from zeroserve.wire.descriptions import EndpointDescription


@dataclass(eq=False)
class WorkerState:
    """A registered worker as the broker sees it."""

    identity: bytes
    worker_id: str
    service: str
    slots: int
    liveness: Liveness
    in_flight: set = field(default_factory=set)  # batch ids
    # batch ids of in-flight batches whose requests wait on dependency calls: their slots
    # count as free (up to MAX_WAITING_PER_SLOT per slot), so that the calls they wait on,
    # and others, can run: a waiting batch holds no CPU
    waiting: set = field(default_factory=set)
    draining: bool = False
    version: int = 1

    @property
    def free(self) -> int:
        return 0 if self.draining else self.slots - len(self.in_flight) + len(self.waiting)


MAX_WAITING_PER_SLOT = 64  # a bound on the batches a worker holds while they wait on calls


class WorkerRegistry:
    """Workers per service version, with least-recently-used choice among those with a free
    slot."""

    def __init__(self, liveness_s: float) -> None:
        self.liveness_s = liveness_s  # a worker silent for longer is dead (zeroserve.liveness)
        self._workers: dict[bytes, WorkerState] = {}
        self._idle: dict[tuple[str, int], OrderedDict[bytes, None]] = {}
        # service -> version -> its endpoints as the version's latest READY described them,
        # kept after its workers leave
        self.services: dict[str, dict[int, dict[str, EndpointDescription]]] = {}

    def __len__(self) -> int:
        return len(self._workers)

    def __iter__(self):
        return iter(list(self._workers.values()))

    def get(self, identity: bytes) -> WorkerState | None:
        return self._workers.get(identity)

    def register(self, identity: bytes, worker_id: str, service: str, endpoints: dict,
                 slots: int, now: float, version: int = 1) -> WorkerState:
        """Add a worker of ``service`` at ``version`` (a known identity registering again is
        replaced: call ``remove`` first to recover its in-flight work)."""
        self.services.setdefault(service, {})[version] = endpoints
        worker = WorkerState(identity, worker_id, service, slots,
                             Liveness(self.liveness_s, heard_at=now), version=version)
        self._workers[identity] = worker
        self._idle.setdefault((service, version), OrderedDict())[identity] = None
        return worker

    def latest(self, service: str) -> int | None:
        """The version that version-less work of ``service`` goes to: the highest one with a
        worker that takes work, else the highest known; None for an unknown service."""
        known = self.services.get(service)
        if not known:
            return None
        live = [w.version for w in self._workers.values()
                if w.service == service and not w.draining]
        return max(live) if live else max(known)

    def other_connection(self, worker: WorkerState) -> WorkerState | None:
        """The registered worker with ``worker``'s id on another connection (the same process,
        reconnected), or None."""
        for other in self._workers.values():
            if other.worker_id == worker.worker_id and other is not worker:
                return other
        return None

    def adopt(self, worker: WorkerState, batch_id: int, waiting: bool) -> None:
        """``worker`` runs ``batch_id`` already (taken over from its previous connection)."""
        worker.in_flight.add(batch_id)
        self.mark_waiting(worker, batch_id, waiting)

    def touch(self, identity: bytes, now: float) -> WorkerState | None:
        worker = self._workers.get(identity)
        if worker is not None:
            worker.liveness.heard(now)
        return worker

    def remove(self, identity: bytes) -> WorkerState | None:
        worker = self._workers.pop(identity, None)
        if worker is not None:
            self._idle.get((worker.service, worker.version), OrderedDict()).pop(identity, None)
        return worker

    def drain(self, identity: bytes) -> WorkerState | None:
        """Stop giving a worker new work; it stays registered until its batches return."""
        worker = self._workers.get(identity)
        if worker is not None:
            worker.draining = True
            self._idle.get((worker.service, worker.version), OrderedDict()).pop(identity, None)
        return worker

    def acquire(self, service: str, batch_id: int, version: int = 1) -> WorkerState | None:
        """Take a slot on the least recently used worker of ``service`` at ``version`` with
        one free, or None."""
        idle = self._idle.get((service, version))
        if not idle:
            return None
        identity, _ = idle.popitem(last=False)
        worker = self._workers[identity]
        worker.in_flight.add(batch_id)
        if worker.free > 0:
            idle[identity] = None  # most recently used now
        return worker

    def release(self, worker: WorkerState, batch_id: int) -> None:
        """Give back the slot that ``batch_id`` held."""
        worker.in_flight.discard(batch_id)
        worker.waiting.discard(batch_id)
        self._refresh(worker)

    def mark_waiting(self, worker: WorkerState, batch_id: int, waiting: bool) -> None:
        """A batch of ``worker`` waits on dependency calls (its slot counts as free while it
        does), or runs again."""
        if not waiting:
            worker.waiting.discard(batch_id)
        elif batch_id in worker.in_flight and \
                len(worker.waiting) < worker.slots * MAX_WAITING_PER_SLOT:
            worker.waiting.add(batch_id)
        self._refresh(worker)

    def _refresh(self, worker: WorkerState) -> None:
        idle = self._idle.setdefault((worker.service, worker.version), OrderedDict())
        if worker.free <= 0:
            idle.pop(worker.identity, None)
        elif worker.identity in self._workers:
            if worker.identity not in idle:
                idle[worker.identity] = None

    def free_slots(self, service: str, version: int = 1) -> int:
        return sum(w.free for w in self._workers.values()
                   if w.service == service and w.version == version)

    def has_free(self, service: str, version: int = 1) -> bool:
        return bool(self._idle.get((service, version)))

    def busy_slots(self, service: str, version: int = 1) -> int:
        return sum(len(w.in_flight) - len(w.waiting) for w in self._workers.values()
                   if w.service == service and w.version == version)

    def count(self, service: str, version: int | None = None) -> int:
        """Workers of ``service`` that take work: of ``version``, or of every version."""
        return sum(1 for w in self._workers.values() if w.service == service
                   and not w.draining and version in (None, w.version))

    def expired(self, now: float) -> list[WorkerState]:
        """Workers not heard from within the liveness window (not removed: the caller does)."""
        return [w for w in self._workers.values() if w.liveness.dead(now)]
