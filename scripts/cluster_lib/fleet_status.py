"""The text of `scripts/cluster status` (pure: the daemons and the broker's statistics in)."""
from __future__ import annotations

from pathlib import Path

from cluster_lib.rundir import FleetSpec
from cluster_lib.worker_plan import service_of_worker


def worker_pid(worker_id: str) -> int | None:
    """The pid in a worker id (``HOST-PID-RANDOM``, as worker/daemon.py makes it)."""
    parts = worker_id.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def render(spec: FleetSpec, run_dir: Path, members: list[tuple[str, int]],
           stats: dict | None, problem: str = "") -> str:
    """One line per daemon (for a worker, what the broker says of it), then each endpoint's
    queue; for a deployment's fleet, the workers and queues of each service under its name.
    ``stats`` is the broker's STATS answer, or None with ``problem`` saying why."""
    cluster = f", cluster '{spec.cluster}'" if spec.cluster else ""
    title = ", ".join(spec.services) if spec.services else spec.service_name or spec.service
    lines = [f"{title} at {spec.url} (gRPC {spec.connect_host}:"
             f"{spec.grpc_port}){cluster}, run directory {run_dir}"]
    by_pid = {worker_pid(w["worker_id"]): w for w in (stats or {}).get("workers", [])}
    workers = [m for m in members if m[0].startswith("worker")]
    for name, pid in [m for m in members if not m[0].startswith("worker")]:
        lines.append(f"{name:<10} pid {pid}")
    endpoints = sorted((stats or {}).get("endpoints", {}).items())
    groups = [(s, [m for m in workers if service_of_worker(m[0]) == s]) for s in spec.services]
    for service, mine in groups or [("", workers)]:
        if service:
            entry = spec.services[service]
            lines.append(f"service {service} (version {entry.get('version', 1)}, "
                         f"{entry['target']}): {len(mine)} worker(s)")
        lines += [_worker_line(name, pid, by_pid, stats) for name, pid in mine]
        if stats is not None and service:
            lines += _queues([e for e in endpoints if e[0].split(".", 1)[0] == service])
    if stats is None:
        lines.append(f"broker statistics unavailable: {problem}")
        return "\n".join(lines)
    others = list(by_pid.values())
    if others:
        lines.append(f"{len(others)} more worker(s) registered from elsewhere")
    if not spec.services:
        lines += _queues(endpoints)
    return "\n".join(lines)


def _worker_line(name: str, pid: int, by_pid: dict, stats: dict | None) -> str:
    state = ""
    if stats is not None:
        w = by_pid.pop(pid, None)
        state = ("not registered (starting, or cannot reach the broker)" if w is None else
                 f"{'draining' if w['draining'] else 'serving'}, "
                 f"{w['in_flight']}/{w['slots']} slots busy")
        devices = (w or {}).get("info", {}).get("devices")
        if devices is not None:
            state += f", GPUs {devices or 'none'}"
    return f"{name:<10} pid {pid:<8} {state}".rstrip()


def _queues(endpoints: list[tuple[str, dict]]) -> list[str]:
    return [f"queue {endpoint}: {figures['queued']} waiting, {figures['requests']} requests "
            "served" for endpoint, figures in endpoints]
