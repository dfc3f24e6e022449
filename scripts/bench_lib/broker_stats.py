"""What the broker saw during a measured window: model calls and rows per call.

The broker's STATS control call (``zeroserve.cli.admin.broker_stats``) counts
since it started; two snapshots around a window give that window's figures.
Snapshots run in a subprocess with the cluster's interpreter, so the harness
itself never imports zeroserve (``--only-baseline`` works without it).
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

_SNAPSHOT = ("import json, sys\n"
             "from zeroserve.cli.admin import broker_stats\n"
             "print(json.dumps(broker_stats(sys.argv[1], timeout_s=5.0)))\n")


class StatsUnavailable(Exception):
    """The broker's statistics could not be read (old cluster, broker gone, timeout)."""


@dataclass(frozen=True)
class BatchFigures:
    """Model calls (``batches``) and requests the broker completed in a window, per endpoint.

    ``batch_sizes`` ({rows: model calls}) and ``statuses`` ({status: replies}) are the
    window's; ``latency_model`` is the broker's fitted execution time after the window
    (``a_s_per_row``, ``b_s``, ``samples``), when its STATS gives one; ``rejected``: requests
    turned away with the queue full in the window.
    """

    batches: int
    requests: int
    rows: float
    batch_sizes: dict[int, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    latency_model: dict | None = None
    rejected: int = 0  # turned away with the queue full

    @property
    def mean_batch_size(self) -> float:
        """Rows per model call; 0.0 when there was no call."""
        return self.rows / self.batches if self.batches else 0.0

    def fitted_exec_ms(self, rows: int) -> float | None:
        """The broker's fitted a*rows+b in ms, or None without a fitted model."""
        m = self.latency_model or {}
        try:
            return 1000.0 * (float(m["a_s_per_row"]) * rows + float(m["b_s"])) \
                if m.get("samples") else None
        except (KeyError, TypeError, ValueError):
            return None

    def to_json(self) -> dict:
        return {"batches": self.batches, "requests": self.requests,
                "mean_batch_size": round(self.mean_batch_size, 3),
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "statuses": dict(sorted(self.statuses.items())),
                "rejected_queue_full": self.rejected,
                "latency_model": self.latency_model}


def snapshot(python: str, control_address: str, cwd: Path) -> dict:
    """The broker's STATS answer. Raises StatsUnavailable."""
    try:
        done = subprocess.run([python, "-c", _SNAPSHOT, control_address], cwd=cwd,
                              capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StatsUnavailable(str(exc)) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise StatsUnavailable(last)
    try:
        return json.loads(done.stdout)
    except ValueError as exc:
        raise StatsUnavailable(f"unreadable answer: {exc}") from None


def endpoint_key(route: str) -> str:
    """``/gpu_sim/predict`` -> ``gpu_sim.predict``, the broker's name for the endpoint."""
    return ".".join(part for part in route.split("/") if part)


def window(before: dict, after: dict, endpoint: str) -> BatchFigures:
    """The figures of ``endpoint`` between two snapshots. Raises StatsUnavailable."""
    def entry(stats: dict) -> dict:
        return stats.get("endpoints", {}).get(endpoint) or {}

    def figures(stats: dict) -> tuple[int, int, float, int]:
        e = entry(stats)
        if not e:
            return 0, 0, 0.0, 0
        return (e["batches"], e["requests"], e["mean_batch_size"] * e["batches"],
                int(e.get("rejected_queue_full", 0)))

    def delta(key: str) -> dict[str, int]:
        c0, c1 = ({str(k): int(v) for k, v in (entry(s).get(key) or {}).items()}
                  for s in (before, after))
        return {k: c1[k] - c0.get(k, 0) for k in c1 if c1[k] - c0.get(k, 0)}

    try:
        b0, r0, rows0, rejected0 = figures(before)
        b1, r1, rows1, rejected1 = figures(after)
        sizes = {int(k): v for k, v in delta("batch_sizes").items()}
        statuses = delta("statuses")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StatsUnavailable(f"unexpected STATS answer: {exc!r}") from None
    model = entry(after).get("latency_model")
    return BatchFigures(b1 - b0, r1 - r0, rows1 - rows0, sizes, statuses,
                        model if isinstance(model, dict) else None, rejected1 - rejected0)
