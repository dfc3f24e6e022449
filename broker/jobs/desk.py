"""The broker's job desk: control calls, lane events and ticks in; store writes and messages out.

:class:`JobDesk` joins the pure :class:`~broker.jobs.scheduler.JobScheduler`
to the :class:`~broker.job_store.JobStore` and to the job sockets (behind
:class:`JobChannels`). Everything it decides is written to the store first:
replies to gateways and messages to lanes wait in a list until
:meth:`JobDesk.flush` has committed (one fsync for a whole loop turn), so a job
is never acknowledged, and an attempt never starts, before it is durable.

A failing store never stops the broker: the first ``sqlite3.Error`` turns the desk
*failing* (:attr:`JobDesk.fault`). What waited for the lost commit is dropped (lane
messages) or answered 503 with ``Retry-After`` (gateway answers); the scheduler
forgets its jobs (the store is their truth), every job call answers 503 naming the
store's error, and the store is opened again once a second; when it opens and takes
a write, its unfinished jobs are loaded again as after a restart (at least once).
A healthy store is checked once a second (:meth:`JobStore.check`: deleted or
replaced, and a probe write).

Every job call may name its caller, as the gateway authenticated it: ``owner`` (the API
key's name) and ``admin``. A job is stored with the name that submitted it; a call naming
another owner (not an admin) gets the 404 of an unknown id, its listings are filtered in the
store (a page of ``limit`` holds ``limit`` of its own jobs), and an idempotency key is looked
up among its own jobs. A call naming nobody (a gateway without keys) sees every job.
"""
from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from broker.job_store import JobStore
from broker.jobs.model import Caller, Job, JobPolicy
from broker.jobs.scheduler import JobScheduler
from zeroserve.config import HeartbeatSettings, JobsSettings
from zeroserve.wire import jobs as jp
from zeroserve.wire.backend import Ready
from zeroserve.wire.descriptions import (
    ServiceDescription,
    TaskDescription,
    TaskNotFound,
    find_task,
    tasks_from_map,
)
from zeroserve.wire.envelope import ProtocolError, Status, pack_map
from zeroserve.wire.frontend import Control, ControlOp, Reply, error_reply
from zeroserve.wire.jobs import JobState

log = logging.getLogger("zeroserve.broker")

_PURGE_EVERY_S = 1.0
_STORE_CHECK_EVERY_S = 1.0  # a healthy store is checked, a failing one reopened, this often
_GRACE_RETRY_AFTER_S = 1  # Retry-After of a submission to a service not registered again yet
_MAX_KEY = 256
_MAX_PAGE = 1000
_MAX_CURSOR = 2**63  # cursors are the store's row numbers: SQLite integers


class JobChannels(Protocol):
    """The job sockets as the desk uses them (``broker.jobs.sockets.JobSockets``)."""

    def open_lane(self, worker_id: str, pull: str, push: str) -> None: ...
    def stop_dispatch(self, worker_id: str) -> None: ...
    def stop_events(self, worker_id: str) -> None: ...
    def send(self, worker_id: str, frames: list) -> None: ...


class JobError(Exception):
    """A job call that fails with ``status``."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


class StoreUnusable(Exception):
    """The job store cannot be opened and written at start (the message names the path)."""


class RetryLater(JobError):
    """A job call refused for now: 503, to be retried after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(Status.NO_WORKER, message)
        self.retry_after_s = retry_after_s


class StoreUnavailable(RetryLater):
    """A job call while the store is failing."""

    def __init__(self, fault: str) -> None:
        super().__init__(f"{fault}; retry shortly", int(_STORE_CHECK_EVERY_S))


def default_store_path(frontend: str) -> str:
    """``$XDG_STATE_HOME/zeroserve/jobs-<frontend port>.sqlite3`` (one store per broker)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state")
    tag = frontend.rsplit(":", 1)[-1] if frontend.startswith("tcp://") else \
        "".join(c if c.isalnum() else "_" for c in frontend)
    return os.path.join(state, "zeroserve", f"jobs-{tag}.sqlite3")


@dataclass(frozen=True)
class JobsConfig:
    """The broker's job settings; ``grace_s`` after start, an unknown service is 503 (its
    workers may not have registered again yet), not 404."""

    store_path: str
    policy: JobPolicy = field(default_factory=JobPolicy)
    max_input_bytes: int = 64 * 1024 * 1024
    grace_s: float = 6.0
    max_result_bytes: int = 64 * 1024 * 1024


class JobDesk:
    """See the module docstring. ``clock`` is wall-clock seconds (``time.time``)."""

    def __init__(self, config: JobsConfig, channels: JobChannels,
                 send_front: Callable[[list], None], clock: Callable[[], float]) -> None:
        self.config = config
        self.channels = channels
        self._send_front = send_front
        self.clock = clock
        self.scheduler = JobScheduler(config.policy)
        # service -> its endpoints and tasks as its workers' latest READY described them
        self._services: dict[str, ServiceDescription] = {}
        self._workers: dict[bytes, str] = {}       # backend identity -> worker id
        self._identity_of: dict[str, bytes] = {}   # worker id -> its latest identity
        self._leaving: dict[str, float] = {}       # worker id -> when to stop hearing it
        self._outbox: list[tuple[str | None, list]] = []  # (worker id or None: frontend, frames)
        self._answers: list[tuple[bytes, bytes]] = []  # (gateway, request id) in the outbox
        self._next_purge = self._next_check = 0.0
        self.fault: str | None = None  # why the store fails, while it does
        self.started = clock()
        self._store: JobStore | None = self._open_at_start()
        self._recover()

    # ------------------------------------------------------------ store

    @property
    def store(self) -> JobStore:
        """The store; raises :class:`StoreUnavailable` while it is failing."""
        if self._store is None:
            raise StoreUnavailable(self.fault or f"job store {self.config.store_path} is closed")
        return self._store

    def _open_at_start(self) -> JobStore:
        """Open (or create) the store and write to it; raises :class:`StoreUnusable`."""
        try:
            return JobStore(self.config.store_path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnusable(f"cannot use the job store {self.config.store_path}: {exc} "
                                "(jobs.store_path)") from exc

    @contextmanager
    def _store_guard(self) -> Iterator[None]:
        """Turn a store error in the block into the failing state (see the module docstring)."""
        try:
            yield
        except sqlite3.Error as exc:
            self._store_failed(exc)

    def _store_failed(self, exc: sqlite3.Error) -> None:
        if self._store is not None:
            self._store.abandon()
            self._store = None
        code = getattr(exc, "sqlite_errorname", None)  # e.g. SQLITE_IOERR_WRITE
        self.fault = f"job store {self.config.store_path} failed: {exc}" + (
            f" ({code})" if code else "")
        self._next_check = self.clock() + _STORE_CHECK_EVERY_S
        log.error("broker: %s; job calls answer 503 and real-time serving goes on; reopening "
                  "it every %.0fs", self.fault, _STORE_CHECK_EVERY_S)
        answers, self._answers, self._outbox = self._answers, [], []
        for gateway, request_id in answers:
            self._answer(gateway, self._unavailable(request_id, StoreUnavailable(self.fault)))
        self._forget_jobs()

    def _forget_jobs(self) -> None:
        """Start the scheduler over with its lanes but no job (they are loaded again from the
        store once it works)."""
        now = self.clock()
        fresh = JobScheduler(self.config.policy)
        for lane in self.scheduler.lanes.values():
            fresh.lane_joined(lane.worker_id, lane.service, lane.slots, [], now)
            if lane.draining:
                fresh.lane_draining(lane.worker_id)
        self.scheduler = fresh

    def _check_store(self, now: float) -> None:
        """Once a second: check the healthy store, or try to open the failing one again."""
        if now < self._next_check:
            return
        self._next_check = now + _STORE_CHECK_EVERY_S
        if self._store is not None:
            with self._store_guard():
                self._store.check()
            return
        try:
            store = JobStore(self.config.store_path, create=False)
        except (sqlite3.Error, OSError) as exc:
            log.debug("broker: job store %s still fails: %s", self.config.store_path, exc)
            return
        self._store, self.fault = store, None
        log.warning("broker: job store %s works again; loading its unfinished jobs",
                    self.config.store_path)
        with self._store_guard():
            self._recover()

    def _unavailable(self, request_id: bytes, exc: RetryLater) -> Reply:
        return error_reply(request_id, exc.status, str(exc), code=int(exc.status),
                           retry_after_s=exc.retry_after_s)

    def _answer(self, gateway: bytes, reply: Reply) -> None:
        self._outbox.append((None, [gateway, *reply.to_frames()]))
        self._answers.append((gateway, reply.request_id))

    def store_health(self) -> dict[str, Any]:
        """``{"path", "ok", "error"}``: whether the job store works, and why not."""
        return {"path": self.config.store_path, "ok": self.fault is None, "error": self.fault}

    def _recover(self) -> None:
        now = self.clock()
        jobs = self.store.active()
        for job in jobs:
            self.scheduler.add(job, now)
        running = sum(job.state is JobState.RUNNING for job in jobs)
        log.info("broker: recovered %d jobs from %s (%d queued, %d running, re-leased)",
                 len(jobs), self.config.store_path, len(jobs) - running, running)

    def flush(self) -> None:
        """Commit what was written, then send what waited for it (a failed commit: see the
        module docstring)."""
        if self._store is not None:
            with self._store_guard():
                self._store.commit()
        outbox, self._outbox, self._answers = self._outbox, [], []
        for worker_id, frames in outbox:
            if worker_id is None:
                self._send_front(frames)
            else:
                self.channels.send(worker_id, frames)

    def close(self) -> None:
        self.flush()
        if self._store is not None:
            self._store.close()

    # ------------------------------------------------------------ lanes

    def tasks_of(self, service: str) -> Mapping[str, TaskDescription]:
        """The tasks that ``service``'s workers announced (none if it has no job lane)."""
        known = self._services.get(service)
        return known.tasks if known is not None else {}

    def lane_ready(self, identity: bytes, ready: Ready) -> None:
        """A worker registered: remember its endpoints and tasks, and open its lane, if it
        has one (a worker without a lane leaves the service's tasks as they were)."""
        self._services[ready.service] = ServiceDescription(
            ready.service, ready.endpoints, self.tasks_of(ready.service))
        try:
            lane = jp.parse_lane(ready.jobs)
            tasks = tasks_from_map(lane.tasks) if lane is not None else {}
        except ProtocolError as exc:
            log.warning("broker: worker %s announced a bad job lane (%s)", ready.worker_id, exc)
            return
        if lane is None:
            return
        self._services[ready.service] = replace(self._services[ready.service], tasks=tasks)
        self._workers[identity] = ready.worker_id
        self._identity_of[ready.worker_id] = identity
        self._leaving.pop(ready.worker_id, None)
        self.channels.open_lane(ready.worker_id, lane.pull, lane.push)
        self.scheduler.lane_joined(ready.worker_id, ready.service, lane.slots, lane.running,
                                   self.clock())
        with self._store_guard():
            self._pump()

    def lane_draining(self, identity: bytes) -> None:
        """The worker is draining: no new job for it."""
        worker_id = self._workers.get(identity)
        if worker_id is not None:
            self.scheduler.lane_draining(worker_id)

    def lane_gone(self, identity: bytes, lost: bool) -> None:
        """The worker left (drained) or was ``lost`` (evicted): its running jobs end now if lost;
        otherwise its events are still heard for one lease, to let them finish."""
        worker_id = self._workers.pop(identity, None)
        if worker_id is None or self._identity_of.get(worker_id) != identity:
            return  # unknown, or the worker has registered again on a new connection
        del self._identity_of[worker_id]
        now = self.clock()
        self.channels.stop_dispatch(worker_id)
        changed = self.scheduler.lane_left(worker_id, now, lost)
        with self._store_guard():
            for job in changed:
                self.store.update(job)
        if lost:
            self.channels.stop_events(worker_id)
        else:
            self._leaving[worker_id] = now + self.config.policy.lease_s
        if changed:
            log.warning("broker: worker %s lost with %d jobs; they are retried or failed",
                        worker_id, len(changed))
        with self._store_guard():
            self._pump()

    # ------------------------------------------------------------ events and time

    def on_event(self, frames: list) -> None:
        """One message from the job sink."""
        try:
            event = jp.parse_event(frames)
        except ProtocolError as exc:
            log.warning("broker: dropped a malformed job event (%s)", exc)
            return
        job, changed = self.scheduler.on_event(event, self.clock())
        if job is None or not changed:
            return
        result: Any = event.result if job.state is JobState.SUCCEEDED else None
        if result is not None and len(result) > self.config.max_result_bytes:
            self._refuse_result(job, len(result))
            result = None
        with self._store_guard():
            self.store.update(job, None if result is None else bytes(getattr(
                result, "bytes", result)))
            if job.state is JobState.FAILED:
                log.warning("broker: job %s (%s.%s) failed after %d attempts: %s", job.id,
                            job.service, job.task, job.attempts, job.error)
            self._pump()

    def _refuse_result(self, job: Job, size: int) -> None:
        """A success whose result is over ``max_result_bytes`` fails the job instead (the
        worker checks first; this holds for a worker with a larger limit)."""
        job.state = JobState.FAILED
        job.error = (f"the task's result is {size} bytes, more than jobs.max_result_bytes "
                     f"({self.config.max_result_bytes}) of the broker")

    def on_tick(self) -> None:
        """Check the store, expire leases, purge finished jobs past retention, dispatch what
        became due."""
        now = self.clock()
        self._check_store(now)
        for worker_id, until in list(self._leaving.items()):
            if until <= now:
                del self._leaving[worker_id]
                self.channels.stop_events(worker_id)
        with self._store_guard():
            for job in self.scheduler.expire_leases(now):
                log.warning("broker: job %s lease expired on worker %s (attempt %d)", job.id,
                            job.worker, job.attempts)
                self.store.update(job)
            if self._store is not None and now >= self._next_purge:
                self._next_purge = now + _PURGE_EVERY_S
                purged = self._store.purge(now)
                if purged:
                    log.info("broker: removed %d finished jobs past their retention", purged)
            self._pump()

    def next_wake(self) -> float | None:
        """Seconds until ``on_tick`` has job work to do, or None."""
        now = self.clock()
        wake = self.scheduler.next_wake(now)
        return None if wake is None else max(0.0, wake - now)

    def _pump(self) -> None:
        now = self.clock()
        for job in self.scheduler.dispatch(now):
            self.store.update(job)
            inputs = self.store.inputs(job.id) or b""
            self._outbox.append((job.worker, jp.JobDispatch(
                job.id, job.task, job.attempts, self.config.policy.lease_s, job.timeout_s,
                inputs).to_frames()))

    # ------------------------------------------------------------ control calls

    def on_control(self, gateway: bytes, ctl: Control) -> None:
        """Answer a job control call (the answer is sent at the next ``flush``)."""
        handlers: dict[ControlOp, Callable[[dict], dict]] = {
            ControlOp.JOB_SUBMIT: self._submit, ControlOp.JOB_GET: self._get,
            ControlOp.JOB_RESULT: self._result, ControlOp.JOB_CANCEL: self._cancel,
            ControlOp.JOB_RETRY: self._retry, ControlOp.JOB_LIST: self._list}
        try:
            reply = Reply(ctl.request_id, Status.OK, pack_map(handlers[ctl.op](ctl.args)))
        except RetryLater as exc:
            reply = self._unavailable(ctl.request_id, exc)
        except JobError as exc:
            reply = error_reply(ctl.request_id, exc.status, str(exc), code=int(exc.status))
        except sqlite3.IntegrityError as exc:  # this call's fault, not the store's
            log.error("broker: job store %s refused a write: %s", self.config.store_path, exc)
            reply = error_reply(ctl.request_id, Status.INTERNAL, f"job store error: {exc}",
                                code=int(Status.INTERNAL))
        except sqlite3.Error as exc:
            self._store_failed(exc)
            reply = self._unavailable(ctl.request_id, StoreUnavailable(self.fault or str(exc)))
        self._answer(gateway, reply)

    def _check_task(self, service: str, task: str) -> TaskDescription:
        if service not in self._services and self.clock() - self.started < self.config.grace_s:
            raise RetryLater(f"no worker of '{service}' has registered yet since the broker "
                             "started; retry shortly", _GRACE_RETRY_AFTER_S)
        try:
            return find_task(self._services, service, task)
        except TaskNotFound as exc:
            raise JobError(exc.status, str(exc)) from None

    @staticmethod
    def _caller(args: dict) -> Caller:
        """The caller the gateway names: ``owner`` (its API key's name; absent when the
        gateway has no keys, and then it sees every job) and ``admin`` (sees every job)."""
        owner, admin = args.get("owner"), args.get("admin", False)
        if owner is None:
            return Caller()
        if not isinstance(owner, str) or not 0 < len(owner) <= _MAX_KEY \
                or not isinstance(admin, bool):
            raise JobError(Status.BAD_REQUEST, f"owner must be a string of 1 to {_MAX_KEY} "
                                               "characters, admin a boolean")
        return Caller(owner, admin)

    def _submit(self, args: dict) -> dict:
        caller = self._caller(args)
        service, task, inputs = args.get("service"), args.get("task"), args.get("inputs")
        key = args.get("idempotency_key")
        if not isinstance(service, str) or not isinstance(task, str) \
                or not isinstance(inputs, bytes):
            raise JobError(Status.BAD_REQUEST, "a job needs a service, a task and inputs")
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= _MAX_KEY):
            raise JobError(Status.BAD_REQUEST,
                           f"idempotency_key must be a string of 1 to {_MAX_KEY} characters")
        if len(inputs) > self.config.max_input_bytes:
            raise JobError(Status.PAYLOAD_TOO_LARGE, f"job inputs are {len(inputs)} bytes, "
                                                     f"at most {self.config.max_input_bytes}")
        desc = self._check_task(service, task)
        if key is not None:
            existing = self.store.find_key(caller.name, key)
            if existing is not None:
                return {"job": self._fresh(existing).describe().to_map(), "created": False}
        now = self.clock()
        job = Job(os.urandom(8).hex(), service, task, JobState.QUEUED,
                  max_attempts=desc.max_attempts, timeout_s=desc.timeout_s, created_at=now,
                  updated_at=now, idempotency_key=key, owner=caller.name)
        self.store.insert(job, inputs)
        self.scheduler.add(job, now)
        self._pump()
        return {"job": job.describe().to_map(), "created": True}

    def _fresh(self, job: Job) -> Job:
        """The in-memory copy of an active job (newer progress), else the stored one."""
        return self.scheduler.active.get(job.id, job)

    def _find(self, args: dict) -> Job:
        """The job ``args`` names; 404 when there is none or the caller may not see it (the
        same answer: a caller learns nothing of other owners' jobs)."""
        caller = self._caller(args)
        job_id = args.get("id")
        if not isinstance(job_id, str):
            raise JobError(Status.BAD_REQUEST, "a job id is needed")
        job = self.scheduler.active.get(job_id)
        if job is None:
            job = self.store.get(job_id)
        if job is None or not caller.sees(job):
            raise JobError(Status.NOT_FOUND, f"no job '{job_id}' (unknown, or removed after "
                                             "its retention)")
        return job

    def _get(self, args: dict) -> dict:
        return {"job": self._find(args).describe().to_map()}

    def _result(self, args: dict) -> dict:
        job = self._find(args)
        if job.state is not JobState.SUCCEEDED:
            detail = f": {job.error}" if job.error and job.state.terminal else ""
            raise JobError(Status.CONFLICT, f"job {job.id} is {job.state.value}{detail}")
        return {"job": job.describe().to_map(), "result": self.store.result(job.id) or b""}

    def _cancel(self, args: dict) -> dict:
        job = self._find(args)
        if job.state.terminal:
            raise JobError(Status.CONFLICT, f"job {job.id} is already {job.state.value}")
        active, worker = self.scheduler.cancel(job.id, self.clock())
        assert active is not None, "a job that is not finished is active"
        self.store.update(active)
        if worker is not None:
            self._outbox.append((worker, jp.JobCancel(active.id, active.attempts).to_frames()))
        return {"job": active.describe().to_map()}

    def _retry(self, args: dict) -> dict:
        job = self._find(args)
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            raise JobError(Status.CONFLICT, f"job {job.id} is {job.state.value}; only failed "
                                            "or cancelled jobs can be retried")
        self.scheduler.requeue(job, self.clock())
        self.store.update(job)
        self._pump()
        return {"job": job.describe().to_map()}

    def _list(self, args: dict) -> dict:
        caller = self._caller(args)
        service, state = args.get("service") or None, args.get("state") or None
        after, limit = args.get("after", 0), args.get("limit", 100)
        if state is not None and state not in {s.value for s in JobState}:
            raise JobError(Status.BAD_REQUEST, f"unknown state {state!r}; one of "
                                               f"{[s.value for s in JobState]}")
        if not isinstance(after, int) or not isinstance(limit, int) \
                or not 1 <= limit <= _MAX_PAGE or not 0 <= after < _MAX_CURSOR \
                or (service is not None and not isinstance(service, str)):
            raise JobError(Status.BAD_REQUEST, f"bad page: limit is 1..{_MAX_PAGE}, cursor is "
                                               "0..2**63-1, both integers")
        jobs, cursor = self.store.page(service, state, after, limit,
                                       None if caller.sees_all else caller.name)
        return {"jobs": [self._fresh(job).describe().to_map() for job in jobs], "next": cursor}

    # ------------------------------------------------------------ reporting

    def stats(self) -> dict[str, Any]:
        """Active jobs, lanes and free job slots; stored jobs per state; the store's health."""
        stored = self._store.counts() if self._store is not None else {}
        return {**self.scheduler.counts(), "stored": stored, "store": self.store_health()}


def jobs_config_from(jobs: JobsSettings, heartbeat: HeartbeatSettings,
                     frontend: str) -> JobsConfig:
    """The broker's job settings (``jobs.*``; the store path defaults per frontend port)."""
    return JobsConfig(
        store_path=jobs.store_path or default_store_path(frontend),
        policy=JobPolicy(lease_s=jobs.lease_s, backoff_s=jobs.retry_backoff_s,
                         backoff_max_s=jobs.retry_backoff_max_s, retention_s=jobs.retention_s),
        max_input_bytes=jobs.max_input_bytes,
        max_result_bytes=jobs.max_result_bytes,
        grace_s=2 * heartbeat.liveness_s)
