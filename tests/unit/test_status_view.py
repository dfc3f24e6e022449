"""`zeroserve status`: requests/s between two snapshots, and the table."""
from __future__ import annotations

from zeroserve.cli.status import render, request_rates


def _stats(requests: int) -> dict:
    return {"broker_id": "b1", "uptime_s": 10.0, "malformed_dropped": 0,
            "workers": [{"worker_id": "w1", "service": "mlp", "slots": 2, "in_flight": 1,
                         "draining": False, "last_heartbeat_s": 0.4}],
            "endpoints": {"mlp.predict": {
                "queued": 0, "requests": requests, "batches": requests, "mean_batch_size": 1.0,
                "mean_queue_wait_ms": 0.1, "mean_exec_ms": 0.2, "batch_sizes": {1: requests},
                "max_batch_size": 1, "max_latency_ms": 0.0,
                "latency_model": {"a_s_per_row": 0.0, "b_s": 0.0002}}},
            "jobs": {"lanes": 1, "free_slots": 1, "stored": {"succeeded": 3}}}


def test_rates_come_from_the_counters_difference() -> None:
    assert request_rates(_stats(100), _stats(350), 0.5) == {"mlp.predict": 500.0}
    assert request_rates(_stats(100), _stats(40), 1.0) == {"mlp.predict": 40.0}  # restarted
    assert request_rates({}, _stats(10), 2.0) == {"mlp.predict": 5.0}
    assert request_rates(_stats(1), _stats(2), 0.0) == {}


def test_table_shows_workers_rates_and_jobs() -> None:
    text = render(_stats(350), {"mlp.predict": 500.0})
    assert "w1" in text and "0.4s ago" in text
    lines = text.split("\n")
    header = next(line for line in lines if line.startswith("endpoint"))
    row = next(line for line in lines if line.startswith("mlp.predict "))
    assert header.split()[:3] == ["endpoint", "queued", "req/s"] and row.split()[2] == "500"
    assert "jobs: succeeded 3" in text
    assert " - " in render(_stats(1))  # no rate before the second snapshot


def test_table_shows_streams_and_dependency_calls() -> None:
    stats = _stats(3)
    stats["endpoints"]["mlp.predict"]["streams"] = {
        "active": 2, "started": 7, "chunks": 140, "cancelled": 1, "lost_mid_stream": 0,
        "mean_first_chunk_ms": 1.5, "mean_duration_ms": 40.0}
    stats["dependency_calls"] = [{"caller": "rank", "callee": "mlp", "calls": 9}]
    text = render(stats)
    row = next(line for line in text.split("\n") if line.startswith("mlp.predict ") and
               "140" in line)
    assert row.split()[1:4] == ["2", "7", "140"]
    assert "dependency calls: rank -> mlp 9" in text
    assert "stream endpoint" not in render(_stats(3))
