"""How busy this host is, so that a table measured next to other load says so."""
from __future__ import annotations

import time
from pathlib import Path

BUSY_THRESHOLD = 0.2  # share of all CPUs in use, with nothing of ours running, worth a warning


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies over all CPUs from /proc/stat; None where there is none."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return idle, sum(values)


def cpu_busy_share(seconds: float = 1.0) -> float | None:
    """Share (0..1) of all CPUs busy over the next ``seconds``; None where unknown (not Linux)."""
    before = _cpu_times()
    time.sleep(seconds)
    after = _cpu_times()
    if before is None or after is None or after[1] == before[1]:
        return None
    return 1.0 - (after[0] - before[0]) / (after[1] - before[1])
