"""The job-polling rule: growing polls up to 1 s, a timeout before the poll that would pass it,
and the error of a job that did not succeed (pure, fake clock)."""
from __future__ import annotations

import pytest

import zeroserve
from zeroserve.client.jobs import JobPolling, unsuccessful
from zeroserve.client.retry import GiveUp, Wait


def test_polls_grow_by_half_up_to_a_second_until_the_job_has_finished() -> None:
    polling = JobPolling("j", None, lambda: 0.0, poll_s=0.4)
    waits = [polling.seen({"state": "running"}) for _ in range(4)]
    assert waits == [Wait(0.4), Wait(pytest.approx(0.6)), Wait(pytest.approx(0.9)), Wait(1.0)]
    for state in ("succeeded", "failed", "cancelled"):
        assert polling.seen({"state": state}) is None


def test_the_wait_gives_up_before_a_poll_past_its_timeout() -> None:
    now = [0.0]
    polling = JobPolling("j-1", 1.0, lambda: now[0], poll_s=0.5)
    assert polling.seen({"state": "queued"}) == Wait(0.5)
    now[0] = 0.5
    step = polling.seen({"state": "queued"})
    assert isinstance(step, GiveUp) and isinstance(step.error, TimeoutError)
    assert "job j-1 is still queued after 1.0s" in str(step.error)


def test_an_unknown_state_is_refused_not_polled_forever() -> None:
    with pytest.raises(ValueError):
        JobPolling("j", None, lambda: 0.0).seen({"state": "Succeeded"})


def test_a_failed_or_cancelled_job_has_its_error_and_a_succeeded_one_none() -> None:
    failed = unsuccessful("j", {"state": "failed", "attempts": 2, "error": "RuntimeError: x"})
    assert isinstance(failed, zeroserve.JobFailed) and "after 2 attempts" in failed.message
    assert isinstance(unsuccessful("j", {"state": "cancelled"}), zeroserve.JobCancelled)
    assert unsuccessful("j", {"state": "succeeded"}) is None


class FakeJobs:
    """A job that runs for ``polls`` status calls; records the waits."""

    def __init__(self, polls: int) -> None:
        self.polls, self.waits = polls, []

    def run(self, operation: object) -> dict:
        self.polls -= 1
        return {"id": "j", "state": "running" if self.polls > 0 else "succeeded"}


def test_job_wait_sleeps_by_the_rule_on_the_injected_clock() -> None:
    from zeroserve.client.jobs import Job, JobsApi

    jobs = FakeJobs(polls=4)
    now = [0.0]

    def sleep(seconds: float) -> None:
        jobs.waits.append(seconds)
        now[0] += seconds

    job = Job(JobsApi(jobs.run, lambda: now[0], sleep), "j")
    assert job.wait(timeout=10.0)["state"] == "succeeded"
    assert jobs.waits == [0.05, pytest.approx(0.075), pytest.approx(0.1125)]
