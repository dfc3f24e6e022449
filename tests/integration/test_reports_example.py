"""examples/reports.py as a user runs it: a durable job with progress next to a real-time
endpoint, and job processes at a lower CPU priority than the worker that serves requests
(``worker.job_priority``)."""
import os
import time

import numpy as np
import pytest

import zeroserve

pytestmark = pytest.mark.integration


def _niceness(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rpartition(")")[2].split()[16])  # field 19: nice


def _job_processes(pid: int) -> list[int]:
    """The worker's spawned job slots (not multiprocessing's resource tracker)."""
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        children = [int(p) for p in fh.read().split()]
    return [c for c in children if b"spawn_main" in open(f"/proc/{c}/cmdline", "rb").read()]


def _start(cluster, priority=None):
    env = {} if priority is None else {"ZEROSERVE_WORKER_JOB_PRIORITY": priority}
    cluster.broker()
    cluster.gateway()
    worker = cluster.worker("reports.py:Reports", env=env)
    cluster.wait_ready(1)
    return worker


def test_score_file_job_runs_below_the_real_time_worker(cluster):
    worker = _start(cluster)
    rows = np.arange(1000 * 8, dtype=np.float32).reshape(1000, 8) / 1000
    with zeroserve.Client(cluster.url) as client:
        job = client.submit("reports", "score_file", rows=rows, chunk_rows=100)
        result = job.result(timeout=30)
        status = job.status()
        summary = client.call("reports", "summary", rows=rows[:3], timeout=5)
    weights = np.linspace(-1.0, 1.0, 1024, dtype=np.float32)[:8]
    assert result["rows"] == 1000
    assert result["mean"] == pytest.approx(float((rows @ weights).mean()), rel=1e-5)
    assert status["state"] == "succeeded" and status["progress"] == 1.0
    assert summary["rows"] == 3
    lane = _job_processes(worker.pid)
    assert lane, "the worker has no job process"
    assert os.sched_getscheduler(worker.pid) == os.SCHED_OTHER
    assert {os.sched_getscheduler(pid) for pid in lane} == {os.SCHED_IDLE}  # the default


@pytest.mark.parametrize(("priority", "added"), [("low", 10), ("normal", 0)])
def test_job_priority_low_is_nice_10_and_normal_is_the_workers_own(cluster, priority, added):
    worker = _start(cluster, priority)
    with zeroserve.Client(cluster.url) as client:  # a job has run: its process has started
        client.submit("reports", "score_file", rows=np.ones((2, 2), np.float32)).result(30)
    lane = _job_processes(worker.pid)
    assert lane and {os.sched_getscheduler(pid) for pid in lane} == {os.SCHED_OTHER}
    assert {_niceness(pid) for pid in lane} == {min(_niceness(worker.pid) + added, 19)}


def test_unknown_job_priority_stops_the_worker_with_a_clear_error(cluster):
    cluster.broker()
    worker = cluster.worker("reports.py:Reports", env={"ZEROSERVE_WORKER_JOB_PRIORITY": "top"})
    deadline = time.monotonic() + 20
    while worker.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not worker.alive()
    assert worker.proc.returncode != 0
    assert "worker.job_priority must be one of idle, low, normal, got 'top'" in worker.log()
