"""The broker's metric families, from a STATS answer."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from broker.job_store import JobStore
from broker.jobs.model import Job, JobState
from broker.metrics import BrokerMetrics, _batch_histogram, families


def test_batch_sizes_become_a_cumulative_histogram() -> None:
    buckets, total = _batch_histogram({1: 3, 3: 2, 64: 1, 300: 1})
    as_dict = dict(buckets)
    assert as_dict["1"] == 3 and as_dict["2"] == 3 and as_dict["4"] == 5
    assert as_dict["64"] == 6 and as_dict["256"] == 6 and as_dict["+Inf"] == 7
    assert total == 3 + 6 + 64 + 300


def test_families_of_a_stats_answer() -> None:
    stats = {
        "uptime_s": 12.0, "malformed_dropped": 4,
        "workers": [{"service": "mlp", "slots": 2, "in_flight": 1},
                    {"service": "mlp", "slots": 2, "in_flight": 0}],
        "endpoints": {"mlp.predict": {"queued": 3, "statuses": {200: 10, 504: 1},
                                      "batches": 4, "batch_sizes": {2: 4},
                                      "mean_queue_wait_ms": 2.0, "mean_exec_ms": 1.0}},
        "jobs": {"stored": {"queued": 2, "succeeded": 5}},
    }
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in families(stats) for s in family.samples}
    mlp = (("endpoint", "predict"), ("service", "mlp"))
    assert samples[("zeroserve_broker_workers", (("service", "mlp"),))] == 2
    assert samples[("zeroserve_broker_worker_in_flight", (("service", "mlp"),))] == 1
    assert samples[("zeroserve_broker_queue_depth", mlp)] == 3
    assert samples[("zeroserve_broker_requests_total",
                    (*mlp, ("status", "504")))] == 1
    assert samples[("zeroserve_broker_batch_size_sum", mlp)] == 8
    assert samples[("zeroserve_jobs", (("state", "succeeded"),))] == 5
    assert samples[("zeroserve_broker_malformed_dropped_total", ())] == 4


def test_an_empty_snapshot_gives_empty_families() -> None:
    assert all(not f.samples or f.name.endswith(("dropped", "uptime_seconds"))
               for f in families({}))


def _job(job_id: str, state: JobState) -> Job:
    return Job(id=job_id, service="chores", task="ping", state=state, max_attempts=1,
               timeout_s=1.0, created_at=0.0, updated_at=0.0)


def test_stored_jobs_are_counted_beside_an_open_write(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    for n, state in enumerate([JobState.QUEUED, JobState.QUEUED, JobState.SUCCEEDED]):
        store.insert(_job(f"j{n}", state), b"")
    store.commit()
    store.insert(_job("uncommitted", JobState.RUNNING), b"")  # the broker's write in progress
    assert store.counts() == {"queued": 2, "succeeded": 1}
    done = _job("j0", JobState.SUCCEEDED)
    store.update(done)
    store.commit()
    assert store.counts() == {"queued": 1, "succeeded": 2, "running": 1}
    store.close()
    reopened = JobStore(tmp_path / "jobs.sqlite3")  # counted once when opened
    assert reopened.counts() == {"queued": 1, "succeeded": 2, "running": 1}
    reopened.close()


def test_the_store_is_held_exclusively_with_no_mapped_wal_index(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.insert(_job("j", JobState.QUEUED), b"")
    store.commit()
    assert not (tmp_path / "jobs.sqlite3-shm").exists()  # the WAL index is in the heap
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        JobStore(tmp_path / "jobs.sqlite3")  # a second broker on the same store
    store.close()


def test_stored_job_counts_and_store_health_come_from_the_snapshot() -> None:
    metrics = BrokerMetrics()
    metrics.update({"jobs": {"stored": {"running": 7}, "store": {"ok": False}}})
    samples = {(s.name, tuple(s.labels.items())): s.value
               for family in metrics.collect() for s in family.samples}
    assert samples[("zeroserve_jobs", (("state", "running"),))] == 7
    assert samples[("zeroserve_jobs_store_ok", ())] == 0


def test_queue_wait_and_exec_times_become_histograms() -> None:
    from broker.stats import EndpointStats

    stats = EndpointStats()
    for seconds in (0.0002, 0.003, 0.003, 7.0, 60.0):
        stats.record_wait(seconds)
    stats.record_batch(4, 2, 0.02)
    summary = {"queued": 0, "batches": 1, "mean_queue_wait_ms": 0.0, "mean_exec_ms": 0.0,
               **stats.summary()}
    samples = {(s.name, s.labels.get("le")): s.value
               for family in families({"endpoints": {"m.e": summary}}) for s in family.samples}
    wait = "zeroserve_broker_queue_wait_seconds"
    assert samples[(f"{wait}_bucket", "0.0005")] == 1
    assert samples[(f"{wait}_bucket", "0.005")] == 3
    assert samples[(f"{wait}_bucket", "10.0")] == 4
    assert samples[(f"{wait}_bucket", "+Inf")] == samples[(f"{wait}_count", None)] == 5
    assert samples[(f"{wait}_sum", None)] == 0.0002 + 0.006 + 67.0
    assert samples[("zeroserve_broker_exec_seconds_bucket", "0.025")] == 1
    assert samples[("zeroserve_broker_exec_seconds_bucket", "0.01")] == 0


def test_streams_and_dependency_calls_have_their_families() -> None:
    buckets = [0] * 15
    buckets[3] = 2
    stats = {"endpoints": {"chat.generate": {
        "queued": 0, "statuses": {200: 2}, "batches": 2, "batch_sizes": {1: 2},
        "mean_queue_wait_ms": 0.1, "mean_exec_ms": 40.0,
        "streams": {"active": 1, "started": 3, "chunks": 90, "cancelled": 1,
                    "lost_mid_stream": 0, "mean_first_chunk_ms": 4.0, "mean_duration_ms": 40.0,
                    "first_chunk_s": {"buckets": buckets, "sum": 0.008}}}},
        "dependency_calls": [{"caller": "rank", "callee": "embed", "calls": 7}]}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in families(stats) for s in family.samples}
    labels = (("endpoint", "generate"), ("service", "chat"))
    assert samples[("zeroserve_broker_streams_active", labels)] == 1
    assert samples[("zeroserve_broker_stream_chunks_total", labels)] == 90
    assert samples[("zeroserve_broker_streams_cancelled_total", labels)] == 1
    assert samples[("zeroserve_broker_stream_first_chunk_seconds_count", labels)] == 2
    assert samples[("zeroserve_broker_dependency_calls_total",
                    (("callee", "embed"), ("caller", "rank")))] == 7
