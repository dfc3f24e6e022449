"""What the broker saw during a measured window: model calls and rows per call.

The broker's STATS control call (``zeroserve.admin.broker_stats``) counts
since it started; two snapshots around a window give that window's figures.
Snapshots run in a subprocess with the cluster's interpreter, so the harness
itself never imports zeroserve (``--only-baseline`` works without it).
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

_SNAPSHOT = ("import json, sys\n"
             "from zeroserve.admin import broker_stats\n"
             "print(json.dumps(broker_stats(sys.argv[1], timeout_s=5.0)))\n")


class StatsUnavailable(Exception):
    """The broker's statistics could not be read (old cluster, broker gone, timeout)."""


@dataclass(frozen=True)
class BatchFigures:
    """Model calls (``batches``) and requests the broker completed in a window, per endpoint."""

    batches: int
    requests: int
    rows: float

    @property
    def mean_batch_size(self) -> float:
        """Rows per model call; 0.0 when there was no call."""
        return self.rows / self.batches if self.batches else 0.0


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
    def figures(stats: dict) -> tuple[int, int, float]:
        e = stats.get("endpoints", {}).get(endpoint)
        if e is None:
            return 0, 0, 0.0
        return e["batches"], e["requests"], e["mean_batch_size"] * e["batches"]

    try:
        b0, r0, rows0 = figures(before)
        b1, r1, rows1 = figures(after)
    except (KeyError, TypeError) as exc:
        raise StatsUnavailable(f"unexpected STATS answer: {exc!r}") from None
    return BatchFigures(b1 - b0, r1 - r0, rows1 - rows0)
