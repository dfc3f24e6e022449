"""A job as the broker keeps it, and the policy numbers that govern leases and retries."""
from __future__ import annotations

from dataclasses import dataclass, fields

from zeroserve.wire.descriptions import JobDescription
from zeroserve.wire.jobs import JobState


@dataclass(eq=False)
class Job:
    """One job: what to run, where it is, and its history. Times are wall-clock seconds.

    Every field of :class:`~zeroserve.wire.descriptions.JobDescription` (what callers see)
    is one of its fields, under the same name; the store keeps them all but the lease.

    ``owner`` is the name of the API key that submitted the job (``""`` when the gateway had
    no keys): only that name (or an admin) sees the job, and its idempotency key is that
    owner's. It is never shown to callers.

    ``attempts`` counts executions handed to a lane (failed, timed out, or lost);
    ``worker`` and ``lease_until`` describe the current lease while ``running``.
    """

    id: str
    service: str
    task: str
    state: JobState
    max_attempts: int
    timeout_s: float
    created_at: float
    updated_at: float
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    progress: float = 0.0
    error: str | None = None
    not_before: float = 0.0
    worker: str | None = None
    lease_until: float | None = None
    cancel_requested: bool = False
    idempotency_key: str | None = None
    expires_at: float | None = None
    owner: str = ""

    def describe(self) -> JobDescription:
        """The status answer: everything a caller may see (no inputs, no result)."""
        return JobDescription(**{f.name: getattr(self, f.name) for f in fields(JobDescription)})


@dataclass(frozen=True)
class Caller:
    """Who makes a job call, as the gateway authenticated it (the broker takes the gateway's
    word; callers never name themselves): ``name`` is the API key's name (``""`` when the
    gateway has no keys), and ``sees_all`` is true for an admin key and when keys are off."""

    name: str = ""
    sees_all: bool = True

    def sees(self, job: Job) -> bool:
        """Whether the caller may know that ``job`` exists."""
        return self.sees_all or job.owner == self.name


@dataclass(frozen=True)
class JobPolicy:
    """Seconds: ``lease_s`` without a sign of life re-queues a job; a failed attempt waits
    ``backoff_s * 2**(attempts-1)`` (at most ``backoff_max_s``) before the next; a finished
    job is kept ``retention_s``."""

    lease_s: float = 30.0
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    retention_s: float = 86400.0

    def backoff(self, attempts: int) -> float:
        """The wait before attempt ``attempts + 1``, after ``attempts`` failed ones."""
        return min(self.backoff_s * 2.0 ** max(attempts - 1, 0), self.backoff_max_s)
