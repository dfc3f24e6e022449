"""Job handles for the client SDK: ``job = client.submit("reports", "score_file", rows=x)``.

A :class:`Job` names one durable job on the cluster; ``job.status()``,
``job.result(timeout=)``, ``job.cancel()`` and ``job.retry()`` call the
gateway's ``/v1/jobs`` routes (msgpack bodies) over ``http(s)://``, or its
``zeroserve.v1.Jobs`` service over ``grpc(s)://``. :class:`AsyncJob` is the same, awaited.
Both wait by the one polling rule, :class:`JobPolling`. Errors are the SDK's typed
exceptions (:mod:`zeroserve.client.errors`), plus :class:`JobFailed` and
:class:`JobCancelled` from ``result``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zeroserve.client import job_operations as ops
from zeroserve.client.errors import ZeroserveError
from zeroserve.client.retry import GiveUp, Wait
from zeroserve.client.transport import Operation
from zeroserve.wire.jobs import JobState

MAX_POLL_S = 1.0


class JobFailed(ZeroserveError):
    """The job ended ``failed`` after its attempts; ``message`` is the last error."""


class JobCancelled(ZeroserveError):
    """The job was cancelled; it has no result."""


class JobPolling:
    """When to look at a job again while waiting for it to finish (pure, clock injected).

    Polls start ``poll_s`` apart and slow by half each time, up to 1 s; the wait gives up
    with ``TimeoutError`` when the next poll would come after ``timeout`` (None: never).
    """

    def __init__(self, job_id: str, timeout: float | None, clock: Callable[[], float],
                 poll_s: float = 0.05) -> None:
        self.job_id, self.timeout, self.clock, self.poll_s = job_id, timeout, clock, poll_s
        self.deadline = None if timeout is None else clock() + timeout

    def seen(self, info: dict[str, Any]) -> Wait | GiveUp | None:
        """After a status ``info``: None when the job has finished, else the next step."""
        state = JobState(info["state"])
        if state.terminal:
            return None
        if self.deadline is not None and self.clock() + self.poll_s > self.deadline:
            return GiveUp(TimeoutError(f"job {self.job_id} is still {state.value} after "
                                       f"{self.timeout}s"))
        wait, self.poll_s = Wait(self.poll_s), min(self.poll_s * 1.5, MAX_POLL_S)
        return wait


def unsuccessful(job_id: str, info: dict[str, Any]) -> ZeroserveError | None:
    """The error of a finished job that did not succeed (None when it succeeded)."""
    state = JobState(info["state"])
    if state is JobState.FAILED:
        return JobFailed(409, f"job {job_id} failed after {info['attempts']} attempts: "
                              f"{info.get('error')}")
    if state is JobState.CANCELLED:
        return JobCancelled(409, f"job {job_id} was cancelled")
    return None


class JobsApi:
    """The job calls through a client: each method returns what ``run`` returns for its
    operation (the answer for :class:`zeroserve.Client`, an awaitable of it for
    :class:`zeroserve.AsyncClient`); ``clock`` and ``sleep`` pace the waits."""

    def __init__(self, run: Callable[[Operation], Any], clock: Callable[[], float],
                 sleep: Callable[[float], Any]) -> None:
        self.run, self.clock, self.sleep = run, clock, sleep

    def submit(self, service: str, endpoint: str, inputs: Any,
               idempotency_key: str | None) -> Any:
        return self.run(ops.submit_job(service, endpoint, inputs, idempotency_key))

    def get(self, job_id: str) -> Any:
        return self.run(ops.get_job(job_id))

    def result(self, job_id: str) -> Any:
        return self.run(ops.job_result(job_id))

    def cancel(self, job_id: str) -> Any:
        return self.run(ops.cancel_job(job_id))

    def retry(self, job_id: str) -> Any:
        return self.run(ops.retry_job(job_id))

    def list(self, service: str | None, state: str | None, limit: int,
             cursor: int | None) -> Any:
        return self.run(ops.list_jobs(service, state, limit, cursor))


class _Handle:
    def __init__(self, api: JobsApi, job_id: str, info: dict[str, Any] | None = None) -> None:
        self.api = api
        self.id = job_id
        self.info = info or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, state={self.info.get('state')!r})"


class Job(_Handle):
    """A handle on one job (see the module docstring); ``info`` is the last status seen."""

    def status(self) -> dict[str, Any]:
        """State, attempts, progress, timestamps and last error."""
        self.info = self.api.get(self.id)
        return self.info

    def wait(self, timeout: float | None = None, poll_s: float = 0.05) -> dict[str, Any]:
        """Poll until the job has finished; return its status. ``TimeoutError`` after
        ``timeout`` seconds (None: no limit). Polls start at ``poll_s`` and slow to 1 s."""
        polling = JobPolling(self.id, timeout, self.api.clock, poll_s)
        while (step := polling.seen(self.status())) is not None:
            if isinstance(step, GiveUp):
                raise step.error
            self.api.sleep(step.seconds)
        return self.info

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job, then return the task's value; raise :class:`JobFailed` or
        :class:`JobCancelled` if it did not succeed, ``TimeoutError`` past ``timeout``."""
        error = unsuccessful(self.id, self.wait(timeout))
        if error is not None:
            raise error
        return self.api.result(self.id)

    def cancel(self) -> dict[str, Any]:
        """Cancel the job: a queued one never starts, a running one sees ``ctx.cancelled``."""
        self.info = self.api.cancel(self.id)
        return self.info

    def retry(self) -> dict[str, Any]:
        """Run a failed or cancelled job again, with all its attempts."""
        self.info = self.api.retry(self.id)
        return self.info


class AsyncJob(_Handle):
    """A handle on one job, for asyncio; ``info`` is the last status seen."""

    async def status(self) -> dict[str, Any]:
        """State, attempts, progress, timestamps and last error."""
        self.info = await self.api.get(self.id)
        return self.info

    async def wait(self, timeout: float | None = None, poll_s: float = 0.05) -> dict[str, Any]:
        """Poll until the job has finished; ``TimeoutError`` after ``timeout`` seconds."""
        polling = JobPolling(self.id, timeout, self.api.clock, poll_s)
        while (step := polling.seen(await self.status())) is not None:
            if isinstance(step, GiveUp):
                raise step.error
            await self.api.sleep(step.seconds)
        return self.info

    async def result(self, timeout: float | None = None) -> Any:
        """Wait, then the task's value; :class:`JobFailed` / :class:`JobCancelled` otherwise."""
        error = unsuccessful(self.id, await self.wait(timeout))
        if error is not None:
            raise error
        return await self.api.result(self.id)

    async def cancel(self) -> dict[str, Any]:
        """Cancel: a queued job never starts, a running one sees ``ctx.cancelled``."""
        self.info = await self.api.cancel(self.id)
        return self.info

    async def retry(self) -> dict[str, Any]:
        """Run a failed or cancelled job again, with all its attempts."""
        self.info = await self.api.retry(self.id)
        return self.info
