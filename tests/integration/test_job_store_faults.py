"""A fault of the job store never stops real-time serving: a store made immutable, on a full
disk, deleted while the broker runs, or unusable at start; and results over
``jobs.max_result_bytes``. Each test first shows that the fault really happened to this root
process (a write of its own fails, or the file is gone).

Run with ``-s`` to see the figures (docs/reliability.md quotes them)."""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from pathlib import Path

import pytest
from cluster import ROOT, Cluster

pytestmark = pytest.mark.integration

JOB_ENV = {"ZEROSERVE_JOBS_LEASE_S": "2", "ZEROSERVE_JOBS_RETRY_BACKOFF_S": "0.2",
           "ZEROSERVE_JOBS_RETRY_BACKOFF_MAX_S": "1", "ZEROSERVE_WORKER_JOB_SLOTS": "1"}
RESULTS = f"{ROOT / 'tests' / 'result_services.py'}:Results"


def _start(cluster: Cluster, env: dict | None = None, worker_env: dict | None = None) -> None:
    cluster.env.update({**JOB_ENV, **(env or {})})
    cluster.broker()
    cluster.gateway()
    cluster.worker(RESULTS, env=worker_env)
    cluster.wait_ready(1)


def _submit(cluster: Cluster, size: int = 10) -> tuple[int, dict, dict]:
    return cluster.post("/v1/jobs", {"service": "results", "endpoint": "blob",
                                     "inputs": {"size": size}})


def _wait(cluster: Cluster, job_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        status, job = cluster.get(f"/v1/jobs/{job_id}")
        if status == 200 and job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never finished: {job}")


def _real_time_works(cluster: Cluster, calls: int = 20) -> None:
    for _ in range(calls):
        status, body, _ = cluster.post("/results/ping", {})
        assert (status, body) == (200, "pong")


def _until(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _store_health(cluster: Cluster) -> dict:
    status, ready = cluster.get("/readyz")
    assert status == 200, ready  # the gateway stays ready: real-time serving goes on
    return ready["job_store"]


def _chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


def _immutable_or_skip(*paths: Path) -> None:
    try:
        _chattr("+i", *paths)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"chattr +i is not supported here ({exc}): cannot make the store immutable")


def _write_fails(path: Path) -> bool:
    try:
        with open(path, "ab") as f:
            f.write(b"")
    except PermissionError:
        return True
    return False


def _store_fails_and_serving_goes_on(cluster: Cluster, says: str) -> None:
    status, body, headers = _submit(cluster)
    assert status == 503, body
    assert says in body["error"] and str(cluster.job_store) in body["error"], body
    assert headers.get("Retry-After") == "1"
    health = _until(lambda: (h := _store_health(cluster)) and not h["ok"] and h)
    assert health and says in health["error"], health
    store = cluster.stats()["jobs"]["store"]
    assert not store["ok"] and says in store["error"]
    _real_time_works(cluster)
    assert cluster.daemons[0].alive(), cluster.daemons[0].log()


def test_an_immutable_store_fails_job_calls_and_real_time_serving_goes_on(cluster):
    _start(cluster)
    status, body, _ = _submit(cluster)
    assert status == 202 and _wait(cluster, body["id"])["state"] == "succeeded"
    files = [p for p in (cluster.job_store, Path(f"{cluster.job_store}-wal")) if p.exists()]
    assert not Path(f"{cluster.job_store}-shm").exists()  # no memory-mapped WAL index
    _immutable_or_skip(*files)
    try:
        assert all(_write_fails(p) for p in files)  # the fault is real, even for root
        _store_fails_and_serving_goes_on(cluster, "SQLITE_IOERR")
        assert cluster.get(f"/v1/jobs/{body['id']}")[0] == 503
    finally:
        _chattr("-i", *files)
    # the store is back: jobs resume, the finished one is still there
    health = _until(lambda: _store_health(cluster)["ok"])
    assert health
    status, again, _ = _submit(cluster)
    assert status == 202 and _wait(cluster, again["id"])["state"] == "succeeded"
    assert cluster.get(f"/v1/jobs/{body['id']}")[1]["state"] == "succeeded"
    assert "works again" in cluster.daemons[0].log()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs at tmp_path/small (unmounted afterwards); skips where it cannot mount."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> int:
    """Write ``path`` until the file system is full; the bytes written (ENOSPC is the proof)."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                written += f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return written


def test_a_full_disk_fails_job_calls_and_real_time_serving_goes_on(cluster, small_tmpfs):
    cluster.job_store = small_tmpfs / "jobs.sqlite3"
    _start(cluster, env={"ZEROSERVE_JOBS_STORE_PATH": str(cluster.job_store)})
    status, body, _ = _submit(cluster)
    assert status == 202 and _wait(cluster, body["id"])["state"] == "succeeded"
    filler = small_tmpfs / "filler"
    print(f"\nfull disk: filled the 1 MiB tmpfs with {_fill(filler)} bytes")
    try:
        # a submission of 200 kB needs new pages: the disk is full
        status, answer, _ = cluster.post("/v1/jobs", {
            "service": "results", "endpoint": "echo_size", "inputs": {"text": "y" * 200_000}})
        assert status == 503 and "full" in answer["error"], answer
        _store_fails_and_serving_goes_on(cluster, "full")
    finally:
        filler.unlink()
    assert _until(lambda: _store_health(cluster)["ok"])
    status, again, _ = _submit(cluster)
    assert status == 202 and _wait(cluster, again["id"])["state"] == "succeeded"


def test_a_store_folder_that_cannot_be_written_is_a_start_up_error(cluster, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    _immutable_or_skip(folder)
    try:
        assert _write_fails(folder / "probe")  # the fault is real, even for root
        store = folder / "jobs.sqlite3"
        broker = cluster.broker(env={"ZEROSERVE_JOBS_STORE_PATH": str(store)})
        rc = broker.proc.wait(timeout=20)
    finally:
        _chattr("-i", folder)
    log = broker.log()
    assert rc != 0, log
    assert f"cannot use the job store {store}" in log, log


def test_a_store_deleted_while_the_broker_runs_is_reported_and_not_written(cluster):
    _start(cluster)
    status, body, _ = _submit(cluster)
    assert status == 202 and _wait(cluster, body["id"])["state"] == "succeeded"
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{cluster.job_store}{suffix}")
    assert not cluster.job_store.exists()  # the fault is real
    started = time.monotonic()
    health = _until(lambda: (h := _store_health(cluster)) and not h["ok"] and h)
    print(f"\ndeleted store: reported failing after {time.monotonic() - started:.2f} s")
    assert health and "deleted" in health["error"], health
    _store_fails_and_serving_goes_on(cluster, "deleted")
    assert not cluster.job_store.exists()  # nothing was written into a new, empty store


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


LIMIT = 100_000


@pytest.mark.parametrize("who", ["worker", "broker"])
def test_a_result_over_max_result_bytes_fails_the_job(cluster, who):
    # "worker": both have the small limit, the worker refuses to send; "broker": the worker's
    # limit is large, the broker refuses what it receives
    limit = {"ZEROSERVE_JOBS_MAX_RESULT_BYTES": str(LIMIT)}
    _start(cluster, env=limit, worker_env=None if who == "worker" else {
        "ZEROSERVE_JOBS_MAX_RESULT_BYTES": str(10 * LIMIT)})
    status, under, _ = _submit(cluster, size=LIMIT - 1000)
    assert status == 202 and _wait(cluster, under["id"])["state"] == "succeeded"
    status, result = cluster.get(f"/v1/jobs/{under['id']}/result")
    assert status == 200 and len(result) == LIMIT - 1000
    status, over, _ = _submit(cluster, size=LIMIT + 1000)
    job = _wait(cluster, over["id"])
    assert job["state"] == "failed", job
    assert "jobs.max_result_bytes" in job["error"] and f"({LIMIT})" in job["error"], job
    assert ("of the broker" in job["error"]) == (who == "broker"), job
    assert cluster.get(f"/v1/jobs/{over['id']}/result")[0] == 409
    _real_time_works(cluster, 3)


def test_broker_memory_returns_after_a_30_mb_result_is_read(cluster):
    # the worker's loop takes a while over a 30 MB result on a busy host: no eviction for it
    _start(cluster, env={"ZEROSERVE_HEARTBEAT_LIVENESS": "25"})
    broker = cluster.daemons[0]
    status, small, _ = _submit(cluster, size=10)
    _wait(cluster, small["id"])
    cluster.get(f"/v1/jobs/{small['id']}/result")
    time.sleep(1.0)
    base = _rss_mb(broker.pid)
    size = 30 * 1024 * 1024
    status, body, _ = _submit(cluster, size=size)
    assert status == 202 and _wait(cluster, body["id"], timeout=60)["state"] == "succeeded"
    stored = _rss_mb(broker.pid)
    for _ in range(3):
        status, result = cluster.get(f"/v1/jobs/{body['id']}/result", timeout=60)
        assert status == 200 and len(result) == size
    read = _rss_mb(broker.pid)
    time.sleep(2.0)
    after = _rss_mb(broker.pid)
    print(f"\nbroker RSS: {base:.1f} MB before, {stored:.1f} MB after storing a 30 MB result, "
          f"{read:.1f} MB after reading it 3 times, {after:.1f} MB 2 s later")
    assert after - base < 10, (base, stored, read, after)
