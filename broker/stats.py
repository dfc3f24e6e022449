"""Per-endpoint figures the broker keeps: batch sizes, queue wait, execution time, outcomes."""
from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

from zeroserve.wire.envelope import Status

# upper bounds (seconds) of the queue-wait and execution-time histograms
TIME_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0, 10.0)


@dataclass
class EndpointStats:
    """Counters for one endpoint; times in seconds."""

    requests: int = 0
    batches: int = 0
    rejected: int = 0
    rows: int = 0
    exec_s_total: float = 0.0
    wait_s_total: float = 0.0
    wait_s_max: float = 0.0
    waits: int = 0
    batch_sizes: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    # counts per TIME_BUCKETS_S bound (not cumulative), the last one past every bound
    wait_buckets: list = field(default_factory=lambda: [0] * (len(TIME_BUCKETS_S) + 1))
    exec_buckets: list = field(default_factory=lambda: [0] * (len(TIME_BUCKETS_S) + 1))

    def record_batch(self, rows: int, requests: int, exec_s: float) -> None:
        self.batches += 1
        self.requests += requests
        self.rows += rows
        self.exec_s_total += exec_s
        self.batch_sizes[rows] += 1
        self.exec_buckets[bisect_left(TIME_BUCKETS_S, exec_s)] += 1

    def record_wait(self, seconds: float) -> None:
        self.waits += 1
        self.wait_s_total += seconds
        self.wait_s_max = max(self.wait_s_max, seconds)
        self.wait_buckets[bisect_left(TIME_BUCKETS_S, seconds)] += 1

    def record_status(self, status: Status) -> None:
        self.statuses[int(status)] += 1

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "rejected_queue_full": self.rejected,
            "mean_batch_size": self.rows / self.batches if self.batches else 0.0,
            "batch_sizes": dict(sorted(self.batch_sizes.items())),
            "mean_exec_ms": 1000 * self.exec_s_total / self.batches if self.batches else 0.0,
            "mean_queue_wait_ms": 1000 * self.wait_s_total / self.waits if self.waits else 0.0,
            "max_queue_wait_ms": 1000 * self.wait_s_max,
            "statuses": dict(self.statuses),
            "queue_wait_s": {"buckets": list(self.wait_buckets), "sum": self.wait_s_total},
            "exec_s": {"buckets": list(self.exec_buckets), "sum": self.exec_s_total},
        }


@dataclass
class StreamStats:
    """Counters for the streams of one streaming endpoint; times in seconds."""

    started: int = 0
    chunks: int = 0
    cancelled: int = 0
    lost: int = 0  # ended by a worker lost mid-stream
    first_chunk_s_total: float = 0.0
    first_chunks: int = 0
    duration_s_total: float = 0.0
    ended: int = 0
    first_chunk_buckets: list = field(default_factory=lambda: [0] * (len(TIME_BUCKETS_S) + 1))

    def record_first_chunk(self, seconds: float) -> None:
        self.first_chunks += 1
        self.first_chunk_s_total += seconds
        self.first_chunk_buckets[bisect_left(TIME_BUCKETS_S, seconds)] += 1

    def record_end(self, seconds: float) -> None:
        self.ended += 1
        self.duration_s_total += seconds

    def summary(self, active: int) -> dict:
        return {
            "active": active, "started": self.started, "chunks": self.chunks,
            "cancelled": self.cancelled, "lost_mid_stream": self.lost,
            "mean_first_chunk_ms": 1000 * self.first_chunk_s_total / self.first_chunks
            if self.first_chunks else 0.0,
            "mean_duration_ms": 1000 * self.duration_s_total / self.ended if self.ended else 0.0,
            "first_chunk_s": {"buckets": list(self.first_chunk_buckets),
                              "sum": self.first_chunk_s_total},
        }
