"""examples/reports.py as a user runs it: a durable job with progress next to a real-time
endpoint, and job processes at a lower CPU priority than the worker that serves requests."""
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


def test_score_file_job_runs_below_the_real_time_worker(cluster):
    cluster.broker()
    cluster.gateway()
    worker = cluster.worker("reports.py:Reports", env={"ZEROSERVE_WORKER_JOB_NICE": "7"})
    cluster.wait_ready(1)
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
    assert _niceness(worker.pid) == _niceness(os.getpid())
    assert {_niceness(pid) for pid in lane} == {min(_niceness(os.getpid()) + 7, 19)}


def test_job_nice_out_of_range_stops_the_worker_with_a_clear_error(cluster):
    cluster.broker()
    worker = cluster.worker("reports.py:Reports", env={"ZEROSERVE_WORKER_JOB_NICE": "40"})
    deadline = time.monotonic() + 20
    while worker.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not worker.alive()
    assert worker.proc.returncode != 0
    assert "worker.job_nice must be between 0 and 19, got 40" in worker.log()
