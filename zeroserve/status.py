"""`zeroserve status`: the broker's workers and per-endpoint figures as a terminal table."""
from __future__ import annotations


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(stats: dict) -> str:
    """Format a broker STATS answer for a terminal."""
    out = [f"broker {stats['broker_id']}  up {stats['uptime_s']:.0f}s  "
           f"malformed messages dropped: {stats['malformed_dropped']}", ""]
    workers = [[w["worker_id"], w["service"], w["slots"], w["in_flight"],
                "draining" if w["draining"] else "serving", f"{w['last_heartbeat_s']:.1f}s ago"]
               for w in stats["workers"]]
    out.append(_table(["worker", "service", "slots", "in flight", "state", "heard"], workers)
               if workers else "no workers")
    out.append("")
    rows = []
    for name, e in sorted(stats["endpoints"].items()):
        model = e["latency_model"]
        rows.append([name, e["queued"], e["requests"], e["batches"],
                     f"{e['mean_batch_size']:.1f}", f"{e['mean_queue_wait_ms']:.1f}",
                     f"{e['mean_exec_ms']:.2f}",
                     f"{1000 * model['a_s_per_row']:.3f}ms/row + {1000 * model['b_s']:.2f}ms",
                     f"{e['max_batch_size']}/{e['max_latency_ms']:.0f}ms"])
    out.append(_table(["endpoint", "queued", "requests", "batches", "mean batch",
                       "wait ms", "exec ms", "fitted a*n+b", "limits"], rows)
               if rows else "no endpoints")
    sizes = {n: e["batch_sizes"] for n, e in stats["endpoints"].items() if e["batch_sizes"]}
    for name, hist in sorted(sizes.items()):
        out.append(f"\n{name} batch sizes: " + ", ".join(f"{k}x{v}" for k, v in hist.items()))
    return "\n".join(out)
