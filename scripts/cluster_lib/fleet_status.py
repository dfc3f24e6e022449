"""The text of `scripts/cluster status` (pure: the daemons and the broker's statistics in)."""
from __future__ import annotations

from pathlib import Path

from cluster_lib.rundir import FleetSpec


def worker_pid(worker_id: str) -> int | None:
    """The pid in a worker id (``HOST-PID-RANDOM``, as worker/daemon.py makes it)."""
    parts = worker_id.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def render(spec: FleetSpec, run_dir: Path, members: list[tuple[str, int]],
           stats: dict | None, problem: str = "") -> str:
    """One line per daemon (for a worker, what the broker says of it), then each endpoint's
    queue; ``stats`` is the broker's STATS answer, or None with ``problem`` saying why."""
    cluster = f", cluster '{spec.cluster}'" if spec.cluster else ""
    lines = [f"{spec.service_name or spec.service} at {spec.url} (gRPC {spec.connect_host}:"
             f"{spec.grpc_port}){cluster}, run directory {run_dir}"]
    by_pid = {worker_pid(w["worker_id"]): w for w in (stats or {}).get("workers", [])}
    for name, pid in members:
        state = ""
        if name.startswith("worker") and stats is not None:
            w = by_pid.pop(pid, None)
            state = ("not registered (starting, or cannot reach the broker)" if w is None else
                     f"{'draining' if w['draining'] else 'serving'}, "
                     f"{w['in_flight']}/{w['slots']} slots busy")
        lines.append(f"{name:<10} pid {pid:<8} {state}".rstrip())
    if stats is None:
        lines.append(f"broker statistics unavailable: {problem}")
        return "\n".join(lines)
    others = list(by_pid.values())
    if others:
        lines.append(f"{len(others)} more worker(s) registered from elsewhere")
    for endpoint, figures in sorted(stats.get("endpoints", {}).items()):
        lines.append(f"queue {endpoint}: {figures['queued']} waiting, "
                     f"{figures['requests']} requests served")
    return "\n".join(lines)
