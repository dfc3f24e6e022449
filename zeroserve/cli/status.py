"""`zeroserve status`: the broker's workers and per-endpoint figures as a terminal table."""
from __future__ import annotations


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def request_rates(before: dict, after: dict, seconds: float) -> dict[str, float]:
    """Requests/s per endpoint between two STATS answers taken ``seconds`` apart (an endpoint
    that is new, or whose counter went back after a broker restart, counts from zero)."""
    if seconds <= 0:
        return {}
    old = before.get("endpoints", {})
    rates = {}
    for name, e in after.get("endpoints", {}).items():
        previous = old.get(name, {}).get("requests", 0)
        done = e["requests"] - previous if e["requests"] >= previous else e["requests"]
        rates[name] = done / seconds
    return rates


def devices_of(worker: dict) -> str:
    """The GPUs a worker reported at READY (its CUDA_VISIBLE_DEVICES): ``-`` when it was not
    set (the worker sees every device), ``none`` when it was empty."""
    devices = (worker.get("info") or {}).get("devices")
    if devices is None:
        return "-"
    return devices or "none"


def service_rows(workers: list[dict]) -> list[list]:
    """One row per service: its workers (and how many drain), slots, batches in flight and
    the devices its workers hold."""
    rows = []
    for service in sorted({w["service"] for w in workers}):
        mine = [w for w in workers if w["service"] == service]
        draining = sum(1 for w in mine if w["draining"])
        devices = sorted({d for w in mine for d in devices_of(w).split(",")} - {"-", "none"})
        rows.append([service, f"{len(mine)}" + (f" ({draining} draining)" if draining else ""),
                     sum(w["slots"] for w in mine), sum(w["in_flight"] for w in mine),
                     ",".join(devices) or "-"])
    return rows


def render(stats: dict, rates: dict[str, float] | None = None) -> str:
    """Format a broker STATS answer for a terminal; ``rates`` adds a requests/s column."""
    out = [f"broker {stats['broker_id']}  up {stats['uptime_s']:.0f}s  "
           f"malformed messages dropped: {stats['malformed_dropped']}", ""]
    ordered = sorted(stats["workers"], key=lambda w: (w["service"], w["worker_id"]))
    if ordered:
        out.append(_table(["service", "workers", "slots", "in flight", "devices"],
                          service_rows(ordered)))
        out.append("")
    workers = [[w["worker_id"], w["service"], w["slots"], w["in_flight"],
                "draining" if w["draining"] else "serving", f"{w['last_heartbeat_s']:.1f}s ago",
                devices_of(w)] for w in ordered]
    out.append(_table(["worker", "service", "slots", "in flight", "state", "heard",
                       "devices"], workers) if workers else "no workers")
    out.append("")
    rows = []
    for name, e in sorted(stats["endpoints"].items()):
        model = e["latency_model"]
        rate = "-" if rates is None else f"{rates.get(name, 0.0):.0f}"
        rows.append([name, e["queued"], rate, e["requests"], e["batches"],
                     f"{e['mean_batch_size']:.1f}", f"{e['mean_queue_wait_ms']:.1f}",
                     f"{e['mean_exec_ms']:.2f}",
                     f"{1000 * model['a_s_per_row']:.3f}ms/row + {1000 * model['b_s']:.2f}ms",
                     f"{e['max_batch_size']}/{e['max_latency_ms']:.0f}ms"])
    out.append(_table(["endpoint", "queued", "req/s", "requests", "batches", "mean batch",
                       "wait ms", "exec ms", "fitted a*n+b", "limits"], rows)
               if rows else "no endpoints")
    streams = [[name, e["streams"]["active"], e["streams"]["started"], e["streams"]["chunks"],
                f"{e['streams']['mean_first_chunk_ms']:.1f}",
                f"{e['streams']['mean_duration_ms']:.0f}", e["streams"]["cancelled"],
                e["streams"]["lost_mid_stream"]]
               for name, e in sorted(stats["endpoints"].items()) if "streams" in e]
    if streams:
        out.append("")
        out.append(_table(["stream endpoint", "active", "started", "chunks", "first chunk ms",
                           "duration ms", "cancelled", "lost"], streams))
    calls = stats.get("dependency_calls") or []
    if calls:
        out.append("\ndependency calls: " + ", ".join(
            f"{c['caller']} -> {c['callee']} {c['calls']}" for c in calls))
    jobs = stats.get("jobs") or {}
    if jobs.get("stored"):
        out.append("\njobs: " + ", ".join(f"{k} {v}" for k, v in sorted(jobs["stored"].items()))
                   + f"; job lanes {jobs.get('lanes', 0)}, free job slots "
                     f"{jobs.get('free_slots', 0)}")
    sizes = {n: e["batch_sizes"] for n, e in stats["endpoints"].items() if e["batch_sizes"]}
    for name, hist in sorted(sizes.items()):
        out.append(f"\n{name} batch sizes: " + ", ".join(f"{k}x{v}" for k, v in hist.items()))
    return "\n".join(out)
