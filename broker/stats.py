"""Per-endpoint figures the broker keeps: batch sizes, queue wait, execution time, outcomes,
and the figures of Triton's statistics extension (:class:`InferenceStats`)."""
from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

from zeroserve.wire.envelope import Status

# upper bounds (seconds) of the queue-wait and execution-time histograms
TIME_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0, 10.0)


@dataclass
class Duration:
    """How many requests (or batches) and their cumulative seconds."""

    count: int = 0
    s: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.s += max(seconds, 0.0)

    def pair(self) -> list:
        return [self.count, self.s]


def _compute() -> list[Duration]:
    return [Duration(), Duration(), Duration()]


@dataclass
class InferenceStats:
    """What Triton's statistics extension reports of one endpoint, in seconds and the core's
    clock: requests answered OK (``success``, with their time from arrival to answer) and
    not OK (``fail``); for each OK request its queue wait and its batch's input, user
    function and output times (``compute``: a request is charged its whole batch's, as in
    Triton); ``rows`` of the OK requests (Triton's ``inference_count``), the batches that
    answered one OK at least (``executions``) and, per batch size in rows, how many such
    batches and their input, function and output times (``by_size``)."""

    rows: int = 0
    executions: int = 0
    last_at: float | None = None  # when the last OK answer left
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute: list[Duration] = field(default_factory=_compute)  # input, infer, output
    by_size: dict[int, list[Duration]] = field(default_factory=dict)

    def record_ok(self, rows: int, wait_s: float, times: tuple[float, float, float]) -> None:
        """One request of ``rows`` answered OK after waiting ``wait_s`` in its queue, in a
        batch that took ``times`` (input, infer, output seconds)."""
        self.rows += rows
        self.queue.add(wait_s)
        for duration, seconds in zip(self.compute, times):
            duration.add(seconds)

    def record_execution(self, rows: int, times: tuple[float, float, float],
                         now: float) -> None:
        """A batch of ``rows`` that answered one request OK at least, at ``now``."""
        self.executions += 1
        self.last_at = now
        for duration, seconds in zip(self.by_size.setdefault(rows, _compute()), times):
            duration.add(seconds)

    def summary(self, wall_offset: float) -> dict:
        """The figures as a map; ``last_wall_s`` is the wall-clock time of the last OK answer
        (the core's clock plus ``wall_offset``; 0 for none)."""
        return {
            "rows": self.rows, "executions": self.executions,
            "last_wall_s": 0.0 if self.last_at is None else self.last_at + wall_offset,
            "success": self.success.pair(), "fail": self.fail.pair(),
            "queue": self.queue.pair(), "compute": [d.pair() for d in self.compute],
            "by_size": {rows: [d.pair() for d in times]
                        for rows, times in sorted(self.by_size.items())},
        }


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
    inference: InferenceStats = field(default_factory=InferenceStats)

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

    def record_status(self, status: Status, seconds: float = 0.0) -> None:
        """A request answered with ``status``, ``seconds`` after it arrived (0: not known)."""
        self.statuses[int(status)] += 1
        (self.inference.success if status is Status.OK else self.inference.fail).add(seconds)

    def summary(self, wall_offset: float = 0.0) -> dict:
        """Every figure as a map (``inference``: :meth:`InferenceStats.summary`)."""
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
            "inference": self.inference.summary(wall_offset),
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
