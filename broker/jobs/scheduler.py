"""Job states, leases, retries and job slots, without sockets, store or clock.

:class:`JobScheduler` holds the jobs that are not finished and the workers'
job lanes with their slots. Every method takes the current wall-clock time
and changes jobs in place; the caller persists what changed and sends what
was decided (dispatches, cancels). Rules:

- a job is dispatched only to a lane of its service with a free slot (credit),
  the lane with the most free slots first; queued jobs go in submission order,
  skipping those still in a retry backoff;
- every dispatch is a lease of ``lease_s``; a STARTED or PROGRESS event renews
  it; an expired lease, a failure or a lost worker ends the attempt;
- an ended attempt is retried after ``backoff(attempts)`` while attempts remain,
  else the job is ``failed`` with the last error; a job whose cancellation was
  asked ends ``cancelled`` instead;
- an event for another attempt than the current one is stale and ignored,
  except a success for a job that is waiting to be retried (at-least-once: the
  work is done).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from broker.jobs.model import Job, JobPolicy
from zeroserve.wire.jobs import EventKind, JobEvent, JobState

_REJECTED_WAIT_S = 0.1  # a job refused by a full lane waits this long before it is offered again


@dataclass(eq=False)
class Lane:
    """A worker's job lane as the scheduler sees it; ``running`` maps job id -> attempt."""

    worker_id: str
    service: str
    slots: int
    running: dict[str, int] = field(default_factory=dict)
    draining: bool = False

    @property
    def free(self) -> int:
        return 0 if self.draining else self.slots - len(self.running)


class JobScheduler:
    """The lease / retry / slot logic of the broker's jobs (see the module docstring)."""

    def __init__(self, policy: JobPolicy) -> None:
        self.policy = policy
        self.active: dict[str, Job] = {}      # queued and running jobs
        self.lanes: dict[str, Lane] = {}      # worker id -> lane
        self._queued: dict[str, list[Job]] = {}  # service -> queued jobs, oldest first

    # ------------------------------------------------------------ jobs in

    def add(self, job: Job, now: float) -> None:
        """Take a new or recovered job: a queued one waits for a slot; a running one (recovered
        after a restart) gets a fresh lease, so that its worker can still report on it."""
        self.active[job.id] = job
        if job.state is JobState.QUEUED:
            self._queued.setdefault(job.service, []).append(job)
        elif job.state is JobState.RUNNING:
            job.lease_until = now + self.policy.lease_s
            lane = self.lanes.get(job.worker or "")
            if lane is not None:
                lane.running[job.id] = job.attempts
        else:
            raise ValueError(f"job {job.id} is {job.state.value}, not active")

    def requeue(self, job: Job, now: float) -> None:
        """Start a finished job over (retry): all its attempts are available again."""
        job.state, job.attempts, job.error, job.progress = JobState.QUEUED, 0, None, 0.0
        job.cancel_requested, job.finished_at, job.expires_at = False, None, None
        job.started_at, job.worker, job.lease_until, job.not_before = None, None, None, 0.0
        job.updated_at = now
        self.add(job, now)

    # ------------------------------------------------------------ lanes

    def lane_joined(self, worker_id: str, service: str, slots: int,
                    running: list, now: float) -> None:
        """A worker announced its lane; ``running`` lists the [job id, attempt] it runs now,
        which keep their slots and get their leases renewed."""
        lane = Lane(worker_id, service, slots)
        self.lanes[worker_id] = lane
        for job_id, attempt in running:
            job = self.active.get(job_id)
            if job is not None and job.state is JobState.RUNNING and job.attempts == attempt:
                lane.running[job_id] = attempt
                job.worker, job.lease_until = worker_id, now + self.policy.lease_s

    def lane_draining(self, worker_id: str) -> None:
        """Give a draining worker no new job; what it runs may still finish."""
        lane = self.lanes.get(worker_id)
        if lane is not None:
            lane.draining = True

    def lane_left(self, worker_id: str, now: float, lost: bool) -> list[Job]:
        """Forget a lane. If its worker was ``lost`` (evicted), its attempts end at once;
        otherwise they keep their leases (their results may still arrive). Returns the jobs
        whose state changed."""
        lane = self.lanes.pop(worker_id, None)
        if lane is None or not lost:
            return []
        changed = []
        for job_id, attempt in lane.running.items():
            job = self.active.get(job_id)
            if job is not None and job.state is JobState.RUNNING and job.attempts == attempt:
                self._end_attempt(job, f"worker {worker_id} was lost while running the job", now)
                changed.append(job)
        return changed

    # ------------------------------------------------------------ decisions

    def dispatch(self, now: float) -> list[Job]:
        """Lease queued jobs to lanes with free slots; return them (now ``running``, with their
        ``worker``, ``attempts`` and ``lease_until`` set)."""
        out: list[Job] = []
        for service, queue in self._queued.items():
            if not queue:
                continue
            lanes = [lane for lane in self.lanes.values()
                     if lane.service == service and lane.free > 0]
            index = 0
            while lanes and index < len(queue):
                job = queue[index]
                if job.not_before > now:
                    index += 1
                    continue
                del queue[index]
                lane = max(lanes, key=lambda candidate: candidate.free)
                job.state, job.worker = JobState.RUNNING, lane.worker_id
                job.attempts += 1
                job.lease_until, job.progress, job.updated_at = now + self.policy.lease_s, 0.0, now
                lane.running[job.id] = job.attempts
                if lane.free <= 0:
                    lanes.remove(lane)
                out.append(job)
        return out

    def on_event(self, event: JobEvent, now: float) -> tuple[Job | None, bool]:
        """Apply a lane's event; return the job it concerned (None if stale) and whether the
        job's state changed (then it must be persisted)."""
        lane = self.lanes.get(event.worker_id)
        if event.kind.final and lane is not None \
                and lane.running.get(event.job_id) == event.attempt:
            del lane.running[event.job_id]
        job = self.active.get(event.job_id)
        if job is None:
            return None, False
        if job.state is not JobState.RUNNING or job.attempts != event.attempt:
            if job.state is JobState.QUEUED and event.kind is EventKind.SUCCEEDED:
                self._finish(job, JobState.SUCCEEDED, now)
                return job, True
            return None, False
        if not event.kind.final:
            job.lease_until, job.worker = now + self.policy.lease_s, event.worker_id
            if event.kind is EventKind.STARTED:
                job.started_at = now
            if event.progress is not None:
                job.progress = event.progress
            job.updated_at = now
            return job, False
        if event.kind is EventKind.SUCCEEDED:
            self._finish(job, JobState.SUCCEEDED, now)
        elif event.kind is EventKind.CANCELLED:
            self._finish(job, JobState.CANCELLED, now)
        elif event.kind is EventKind.REJECTED:
            job.attempts -= 1  # it never ran
            self._queue(job, now + _REJECTED_WAIT_S, now)
        else:
            self._end_attempt(job, event.error or "the task failed", now)
        return job, True

    def expire_leases(self, now: float) -> list[Job]:
        """End the attempts whose lease ran out; return the jobs whose state changed."""
        late = [job for job in self.active.values() if job.state is JobState.RUNNING
                and job.lease_until is not None and job.lease_until <= now]
        for job in late:
            lane = self.lanes.get(job.worker or "")
            if lane is not None and lane.running.get(job.id) == job.attempts:
                del lane.running[job.id]
            self._end_attempt(job, f"lease expired: no sign of life from worker {job.worker} "
                                   f"for {self.policy.lease_s:g}s", now)
        return late

    def cancel(self, job_id: str, now: float) -> tuple[Job | None, str | None]:
        """Cancel an active job: a queued one ends ``cancelled`` now and never starts; a running
        one is marked, and the worker to tell is returned. (None, None) if not active."""
        job = self.active.get(job_id)
        if job is None:
            return None, None
        if job.state is JobState.QUEUED:
            self._finish(job, JobState.CANCELLED, now)
            return job, None
        job.cancel_requested, job.updated_at = True, now
        return job, job.worker

    def next_wake(self, now: float) -> float | None:
        """The earliest time a lease ends or a backoff is over, or None."""
        times = [job.lease_until for job in self.active.values()
                 if job.state is JobState.RUNNING and job.lease_until is not None]
        times += [job.not_before for queue in self._queued.values() for job in queue
                  if job.not_before > now]
        return min(times, default=None)

    def counts(self) -> dict[str, int]:
        """Active jobs per state, and free job slots."""
        queued = sum(1 for job in self.active.values() if job.state is JobState.QUEUED)
        return {"queued": queued, "running": len(self.active) - queued,
                "lanes": len(self.lanes),
                "free_slots": sum(max(lane.free, 0) for lane in self.lanes.values())}

    # ------------------------------------------------------------ transitions

    def _queue(self, job: Job, not_before: float, now: float) -> None:
        job.state, job.not_before, job.updated_at = JobState.QUEUED, not_before, now
        job.worker, job.lease_until, job.progress = None, None, 0.0
        self._queued.setdefault(job.service, []).append(job)

    def _end_attempt(self, job: Job, error: str, now: float) -> None:
        if job.cancel_requested:
            self._finish(job, JobState.CANCELLED, now)
        elif job.attempts >= job.max_attempts:
            job.error = error
            self._finish(job, JobState.FAILED, now)
        else:
            job.error = error
            self._queue(job, now + self.policy.backoff(job.attempts), now)

    def _finish(self, job: Job, state: JobState, now: float) -> None:
        if job.state is JobState.QUEUED:
            queue = self._queued.get(job.service, [])
            if job in queue:
                queue.remove(job)
        job.state, job.finished_at, job.updated_at = state, now, now
        job.expires_at = now + self.policy.retention_s
        job.lease_until = None
        if state is JobState.SUCCEEDED:
            job.progress, job.error = 1.0, None
        self.active.pop(job.id, None)
