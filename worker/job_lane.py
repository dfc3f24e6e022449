"""The worker's job lane: jobs from the broker run in child processes, off the real-time loop.

The lane binds a PULL socket (JOB and CANCEL from the broker) and a PUSH
socket (EVENTs to the broker's sink), and names both in the worker's READY
(see ``broker/jobs/sockets.py`` for why the lane binds). It keeps one child
process per job slot (``worker/job_child.py``); each runs one job at a time,
so a CPU-heavy task never competes with real-time requests for this
process's GIL, and at a lower CPU priority (``worker.job_priority``), so that
the host's real-time daemons get a busy CPU first. The lane also keeps each
running job's lease alive, stops a job past its ``timeout_s`` (and one that
ignores a cancel), and replaces a child that died; when each is due is decided
by ``worker/job_timing.py``, which the lane feeds.

While the worker traces, each attempt it runs has a ``job run`` span (from its dispatch to
the child to its end), linked to the submission whose context the job's inputs carry
(``docs/tracing.md``).
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import socket
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import zmq

from worker.job_child import PRIORITIES, child_main
from worker.job_timing import SlotTiming
from zeroserve.curve import Curve
from zeroserve.loopsocket import NOBLOCK, LoopSocket
from zeroserve.service import ServiceSpec
from zeroserve.sockets import open_socket
from zeroserve.tracing import carried_traceparent
from zeroserve.wire import jobs as jp
from zeroserve.wire.envelope import ProtocolError, pack_map, unpack_map
from zeroserve.wire.jobs import EventKind

if TYPE_CHECKING:
    from zeroserve.tracing.spans import WorkerTracer

log = logging.getLogger("zeroserve.worker")

_WATCH_S = 0.1


def lane_host(broker: str) -> str:
    """The address a lane binds: the local one that faces the broker's host."""
    host = urllib.parse.urlsplit(broker).hostname or "127.0.0.1"
    if host in ("127.0.0.1", "localhost", "::1", "*", "0.0.0.0"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))  # no packet is sent; this picks the outgoing address
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


@dataclass(eq=False)
class _Slot:
    """One child process and the job it runs."""

    index: int
    process: Any = None
    conn: Connection | None = None
    cancel: Any = None
    job: jp.JobDispatch | None = None
    timing: SlotTiming = field(default_factory=SlotTiming)  # running while ``job`` is set
    span: Any = None  # the job's run span while tracing is on


class JobLane:
    """See the module docstring. Create and use it on the worker's event loop; ``clock``
    (seconds, monotonic) times the slots (``worker.job_timing``)."""

    def __init__(self, spec: ServiceSpec, worker_id: str, slots: int, host: str,
                 context: zmq.Context, curve: Curve | None = None,
                 priority: str = "normal", max_result_bytes: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if priority not in PRIORITIES:
            raise ValueError(f"worker.job_priority must be one of {', '.join(PRIORITIES)}, "
                             f"got {priority!r}")
        self.spec = spec
        self.target = spec.target or f"{spec.cls.__module__}:{spec.cls.__qualname__}"
        self.worker_id = worker_id
        self.host = host
        self.context = context
        self.curve = curve
        self.priority = priority
        self._clock = clock
        self.max_result_bytes = max_result_bytes  # checked in the child, before it answers
        self._mp = multiprocessing.get_context("spawn")
        self._slots = [_Slot(i) for i in range(slots)]
        self._pull: LoopSocket | None = None
        self._push: zmq.Socket | None = None
        self._backlog: deque[list] = deque()
        self._addresses: tuple[str, str] = ("", "")
        self._draining = False
        self._watcher: asyncio.Task | None = None
        self.tracing: WorkerTracer | None = None  # on: a span per attempt run

    # ------------------------------------------------------------ lifecycle

    def _bind(self, sock: zmq.Socket) -> str:
        sock.bind(f"tcp://{self.host}:*")
        return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))

    def start(self) -> None:
        """Bind both sockets and start one child per slot."""
        # bound here, but the broker is the CURVE server
        pull = open_socket(self.context, zmq.PULL, curve=self.curve)
        push = open_socket(self.context, zmq.PUSH, curve=self.curve)
        self._addresses = (self._bind(pull), self._bind(push))
        self._pull = LoopSocket(pull, self._on_message, copied=4)
        self._push = push
        for slot in self._slots:
            self._spawn(slot)
        self._watcher = asyncio.create_task(self._watch())
        log.info("worker %s: job lane with %d slots, jobs on %s, events on %s", self.worker_id,
                 len(self._slots), *self._addresses)

    def describe(self) -> dict:
        """The ``jobs`` map of READY (see ``zeroserve.wire.jobs.JobLaneInfo``)."""
        return jp.JobLaneInfo(
            len(self._slots), *self._addresses,
            {name: task.describe() for name, task in self.spec.tasks.items()},
            [[s.job.job_id, s.job.attempt] for s in self._slots if s.job]).describe()

    def drain(self) -> None:
        """Take no new job; the running ones go on."""
        self._draining = True

    def busy(self) -> int:
        return sum(1 for slot in self._slots if slot.job is not None)

    async def close(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for running jobs and their events, then stop every child."""
        self.drain()
        deadline = self._clock() + timeout_s
        while (self.busy() or self._backlog) and self._clock() < deadline:
            await asyncio.sleep(0.05)
        if self._watcher is not None:
            self._watcher.cancel()
        for slot in self._slots:
            if slot.span is not None and self.tracing is not None:  # its lease will run out
                self.tracing.job_ended(slot.span, "abandoned", "the worker stopped")
                slot.span = None
            self._stop_child(slot)
        if self._pull is not None:
            self._pull.close()
        if self._push is not None:
            self._push.close(200)

    # ------------------------------------------------------------ children

    def _spawn(self, slot: _Slot) -> None:
        parent, child = self._mp.Pipe()
        slot.cancel = self._mp.Event()
        slot.process = self._mp.Process(
            target=child_main, args=(self.target, child, slot.cancel, self.priority,
                                     self.max_result_bytes),
            name=f"job-slot-{slot.index}", daemon=True)
        slot.process.start()
        child.close()
        slot.conn = parent
        asyncio.get_running_loop().add_reader(parent.fileno(), self._on_child, slot)

    def _stop_child(self, slot: _Slot) -> None:
        if slot.conn is not None:
            asyncio.get_running_loop().remove_reader(slot.conn.fileno())
            slot.conn.close()
            slot.conn = None
        if slot.process is not None:
            if slot.process.is_alive():
                slot.process.kill()
            slot.process.join(1.0)
            slot.process = None

    def _end(self, slot: _Slot, kind: EventKind, error: str | None = None,
             result: bytes | None = None) -> None:
        job = slot.job
        if job is None:
            return
        if slot.timing.cancelled:
            kind, error, result = EventKind.CANCELLED, None, None
        self._event(job, kind, error=error, result=result)
        if slot.span is not None and self.tracing is not None:
            self.tracing.job_ended(slot.span, kind.value, error)
            slot.span = None
        slot.job = None
        slot.timing.end()

    def _replace(self, slot: _Slot, why: str) -> None:
        """Stop a slot's child (timed out, ignored a cancel, or died) and start another."""
        if slot.job is not None:
            log.warning("worker %s: job %s (attempt %d): %s", self.worker_id, slot.job.job_id,
                        slot.job.attempt, why)
        self._end(slot, EventKind.FAILED, error=why)
        self._stop_child(slot)
        if not self._draining and slot.timing.may_respawn(self._clock()):
            self._spawn(slot)

    def _on_child(self, slot: _Slot) -> None:
        conn = slot.conn
        try:
            while conn is not None and slot.conn is conn and conn.poll():
                self._on_child_message(slot, unpack_map(conn.recv_bytes(), "job lane"))
        except (EOFError, OSError):
            code = slot.process.exitcode if slot.process is not None else None
            self._replace(slot, f"the job process died (exit code {code})")
        except ProtocolError as exc:
            log.error("worker %s: bad message from job slot %d: %s", self.worker_id,
                      slot.index, exc)

    def _on_child_message(self, slot: _Slot, message: dict) -> None:
        kind = message.get("kind")
        if kind == "broken":
            log.error("worker %s: job slot %d cannot load %s: %s", self.worker_id, slot.index,
                      self.target, message.get("error"))
            slot.timing.broken(self._clock())
            return
        job = slot.job
        if kind == "ready" or job is None or message.get("job_id") != job.job_id:
            return
        slot.timing.reported(self._clock())
        if kind == "started":
            self._event(job, EventKind.STARTED)
        elif kind == "progress":
            self._event(job, EventKind.PROGRESS, progress=float(message.get("progress", 0.0)))
        elif kind == "succeeded":
            self._end(slot, EventKind.SUCCEEDED, result=message.get("result") or b"")
        else:
            self._end(slot, EventKind.FAILED, error=str(message.get("error")))

    async def _watch(self) -> None:
        """Keep leases alive; stop jobs past their timeout or cancel grace; replace dead ones."""
        while True:
            await asyncio.sleep(_WATCH_S)
            now = self._clock()
            for slot in self._slots:
                job, timing = slot.job, slot.timing
                if slot.process is None:
                    if not self._draining and timing.may_respawn(now):
                        self._spawn(slot)
                    continue
                overdue = timing.overdue(now)
                if not slot.process.is_alive():
                    self._replace(slot, "the job process died (exit code "
                                        f"{slot.process.exitcode})")
                elif overdue is not None:
                    self._replace(slot, timing.reason(overdue))
                elif job is not None and timing.keep_alive_due(now):
                    timing.reported(now)
                    self._event(job, EventKind.PROGRESS)  # alive: the child runs it

    # ------------------------------------------------------------ broker side

    def _on_message(self, frames: list) -> None:
        try:
            message = jp.parse_lane_message(frames)
        except ProtocolError as exc:
            log.warning("worker %s: dropped a malformed job message (%s)", self.worker_id, exc)
            return
        if isinstance(message, jp.JobCancel):
            for slot in self._slots:
                if slot.job is not None and slot.job.job_id == message.job_id \
                        and slot.job.attempt == message.attempt and not slot.timing.cancelled:
                    slot.timing.cancel(self._clock())
                    slot.cancel.set()
            return
        if any(s.job is not None and s.job.job_id == message.job_id
               and s.job.attempt == message.attempt for s in self._slots):
            return  # already running this attempt
        free = next((s for s in self._slots if s.job is None and s.conn is not None), None)
        if free is None or self._draining:
            self._event(message, EventKind.REJECTED)
            return
        slot = free
        assert slot.conn is not None
        slot.cancel.clear()
        slot.job = message
        slot.timing.begin(self._clock(), message.timeout_s, message.lease_s)
        inputs = message.inputs
        if self.tracing is not None:
            slot.span = self.tracing.job_run(carried_traceparent(inputs), message.job_id,
                                             message.task, message.attempt)
        slot.conn.send_bytes(pack_map({
            "job_id": message.job_id, "attempt": message.attempt, "task": message.task,
            "inputs": inputs if isinstance(inputs, bytes) else bytes(inputs)}))

    def _event(self, job: jp.JobDispatch, kind: EventKind, progress: float | None = None,
               error: str | None = None, result: bytes | None = None) -> None:
        self._send(jp.JobEvent(job.job_id, job.attempt, self.worker_id, kind, progress, error,
                               result).to_frames())

    def _send(self, frames: list) -> None:
        """Send an event; while no broker is connected, keep it (and later ones) in order."""
        if self._backlog or not self._try_send(frames):
            self._backlog.append(frames)
            if len(self._backlog) == 1:
                asyncio.get_running_loop().call_later(0.01, self._flush)

    def _try_send(self, frames: list) -> bool:
        assert self._push is not None
        try:
            self._push.send_multipart(frames, NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False

    def _flush(self) -> None:
        while self._backlog and self._try_send(self._backlog[0]):
            self._backlog.popleft()
        if self._backlog:
            asyncio.get_running_loop().call_later(0.01, self._flush)
