"""JobScheduler with a fake clock: slots, leases, retries with backoff, cancel, stale events."""
from broker.jobs.model import Job, JobPolicy
from broker.jobs.scheduler import JobScheduler
from zeroserve.wire.jobs import EventKind, JobEvent, JobState

POLICY = JobPolicy(lease_s=10.0, backoff_s=1.0, backoff_max_s=4.0, retention_s=100.0)


def job(job_id="j1", service="svc", max_attempts=3, now=0.0):
    return Job(job_id, service, "t", JobState.QUEUED, max_attempts, 60.0, now, now)


def event(j, kind, worker="w1", **extra):
    return JobEvent(j.id, j.attempts, worker, kind, **extra)


def scheduler(slots=1, worker="w1"):
    s = JobScheduler(POLICY)
    s.lane_joined(worker, "svc", slots, [], 0.0)
    return s


def test_jobs_wait_until_a_lane_has_a_free_slot():
    s = scheduler(slots=1)
    a, b = job("a"), job("b")
    s.add(a, 0.0)
    s.add(b, 0.0)
    assert s.dispatch(0.0) == [a]
    assert a.state is JobState.RUNNING and a.attempts == 1 and a.worker == "w1"
    assert s.dispatch(0.1) == []  # the only slot is taken: b is held back
    s.on_event(event(a, EventKind.SUCCEEDED), 1.0)
    assert s.dispatch(1.0) == [b]


def test_dispatch_prefers_the_lane_with_most_free_slots_and_skips_other_services():
    s = scheduler(slots=1, worker="small")
    s.lane_joined("big", "svc", 3, [], 0.0)
    s.lane_joined("other", "elsewhere", 5, [], 0.0)
    jobs = [job(f"j{i}") for i in range(4)]
    for j in jobs:
        s.add(j, 0.0)
    s.dispatch(0.0)
    assert sorted(j.worker for j in jobs) == ["big", "big", "big", "small"]


def test_progress_renews_the_lease_and_silence_requeues_with_backoff():
    s = scheduler()
    j = job()
    s.add(j, 0.0)
    s.dispatch(0.0)
    s.on_event(event(j, EventKind.STARTED), 5.0)
    s.on_event(event(j, EventKind.PROGRESS, progress=0.5), 9.0)
    assert j.progress == 0.5 and s.expire_leases(18.9) == []
    assert s.expire_leases(19.0) == [j]
    assert j.state is JobState.QUEUED and "lease expired" in j.error
    assert j.not_before == 19.0 + 1.0  # first retry waits backoff_s
    assert s.dispatch(19.5) == [] and s.dispatch(20.0) == [j] and j.attempts == 2


def test_failures_back_off_exponentially_then_fail_with_the_last_error():
    s = scheduler()
    j = job(max_attempts=3)
    s.add(j, 0.0)
    now = 0.0
    waits = []
    for n in range(3):
        assert s.dispatch(now) == [j]
        s.on_event(event(j, EventKind.FAILED, error=f"boom {n}"), now)
        if j.state is JobState.QUEUED:
            waits.append(j.not_before - now)
            now = j.not_before
    assert waits == [1.0, 2.0]
    assert j.state is JobState.FAILED and j.error == "boom 2" and j.attempts == 3
    assert j.expires_at == now + POLICY.retention_s and j.id not in s.active


def test_backoff_is_capped():
    assert [POLICY.backoff(n) for n in (1, 2, 3, 4, 10)] == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_lost_worker_ends_its_attempts_at_once():
    s = scheduler(slots=2)
    a, b = job("a"), job("b")
    s.add(a, 0.0)
    s.add(b, 0.0)
    s.dispatch(0.0)
    changed = s.lane_left("w1", 1.0, lost=True)
    assert set(changed) == {a, b}
    assert all(j.state is JobState.QUEUED and "lost" in j.error for j in (a, b))


def test_drained_worker_keeps_its_leases_so_results_still_count():
    s = scheduler()
    j = job()
    s.add(j, 0.0)
    s.dispatch(0.0)
    s.lane_draining("w1")
    assert s.lane_left("w1", 1.0, lost=False) == []
    s.on_event(event(j, EventKind.SUCCEEDED), 2.0)
    assert j.state is JobState.SUCCEEDED


def test_cancel_queued_never_starts_and_cancel_running_tells_its_worker():
    s = scheduler(slots=1)
    running, waiting = job("r"), job("w")
    s.add(running, 0.0)
    s.add(waiting, 0.0)
    s.dispatch(0.0)
    assert s.cancel("w", 1.0) == (waiting, None)
    assert waiting.state is JobState.CANCELLED
    assert s.cancel("r", 1.0) == (running, "w1") and running.cancel_requested
    s.on_event(event(running, EventKind.CANCELLED), 2.0)
    assert running.state is JobState.CANCELLED and running.finished_at == 2.0
    assert s.dispatch(3.0) == []  # the cancelled one is never dispatched


def test_a_cancelled_job_whose_lease_expires_ends_cancelled_not_retried():
    s = scheduler()
    j = job()
    s.add(j, 0.0)
    s.dispatch(0.0)
    s.cancel(j.id, 1.0)
    s.expire_leases(11.0)
    assert j.state is JobState.CANCELLED


def test_stale_events_of_an_older_attempt_are_ignored_but_a_late_success_counts():
    s = scheduler()
    j = job()
    s.add(j, 0.0)
    s.dispatch(0.0)
    old = event(j, EventKind.FAILED, error="old")
    s.expire_leases(10.0)  # attempt 1 lost; queued for attempt 2
    assert s.on_event(JobEvent(j.id, 1, "w1", EventKind.PROGRESS), 10.5) == (None, False)
    s.dispatch(11.0)
    assert s.on_event(old, 11.5) == (None, False) and j.state is JobState.RUNNING
    s.expire_leases(21.0)
    assert j.state is JobState.QUEUED
    job_, changed = s.on_event(JobEvent(j.id, 2, "w1", EventKind.SUCCEEDED), 21.5)
    assert job_ is j and changed and j.state is JobState.SUCCEEDED


def test_rejected_dispatch_is_not_an_attempt():
    s = scheduler()
    j = job()
    s.add(j, 0.0)
    s.dispatch(0.0)
    s.on_event(event(j, EventKind.REJECTED), 0.1)
    assert j.state is JobState.QUEUED and j.attempts == 0


def test_recovered_running_job_gets_a_fresh_lease_and_its_lane_slot_back():
    s = JobScheduler(POLICY)
    j = job()
    j.state, j.attempts, j.worker = JobState.RUNNING, 1, "w1"
    s.add(j, 100.0)  # broker restarted; the worker has not registered yet
    assert j.lease_until == 110.0
    s.lane_joined("w1", "svc", 1, [["j1", 1]], 101.0)
    assert s.lanes["w1"].free == 0 and j.lease_until == 111.0
    s.add(job("next"), 101.0)
    assert s.dispatch(101.0) == []
    s.on_event(event(j, EventKind.SUCCEEDED), 102.0)
    assert j.state is JobState.SUCCEEDED and [x.id for x in s.dispatch(102.0)] == ["next"]


def test_retry_of_a_failed_job_starts_over():
    s = scheduler()
    j = job(max_attempts=1)
    s.add(j, 0.0)
    s.dispatch(0.0)
    s.on_event(event(j, EventKind.FAILED, error="x"), 1.0)
    assert j.state is JobState.FAILED
    s.requeue(j, 2.0)
    assert j.state is JobState.QUEUED and j.attempts == 0 and j.error is None
    assert s.dispatch(2.0) == [j]


def test_next_wake_is_the_earliest_lease_end_or_backoff():
    s = scheduler()
    a, b = job("a"), job("b")
    s.add(a, 0.0)
    s.dispatch(0.0)
    s.add(b, 0.0)
    assert s.next_wake(0.0) == 10.0
    b.not_before = 3.0
    assert s.next_wake(0.0) == 3.0
