"""``scripts/bench pipeline``: what a stage of a pipeline costs (services calling services).

One ``zeroserve serve`` of ``scripts/bench_lib/pipeline_service.py``: ``pipeline.run`` calls
``inc.step`` and then ``dbl.step`` through the broker (three stages), ``whole.run`` does the
same work in one endpoint; one worker each. Measured in one run, alternating the two:

1. one connection: p50 and p99 of ``--requests`` calls of each; the added p50 per stage is
   (pipeline - whole) / 2, the two dependency calls;
2. 64 connections for ``--duration`` seconds each: answered calls per second, and the
   pipeline's as a share of the one endpoint's.

The client is a minimal asyncio HTTP/1.1 client in this process. Prints a markdown table and
writes ``pipeline-<time>.json`` under ``--out``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_lib.serving import free_port, post_request, read_answer, serve_argv, start, stop

SERVICES = [f"scripts/bench_lib/pipeline_service.py:{cls}"
            for cls in ("Inc", "Dbl", "Pipeline", "Whole")]
BODY = {"x": list(range(16))}
EXPECTED = [2 * (v + 1) for v in BODY["x"]]


async def _latencies(port: int, path: str, requests: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = post_request(port, path, BODY)
    out = []
    try:
        for _ in range(requests):
            sent = time.perf_counter()
            writer.write(request)
            status, body = await read_answer(reader)
            out.append(time.perf_counter() - sent)
            if status != 200 or json.loads(body) != EXPECTED:
                raise RuntimeError(f"{path} answered {status}: {body[:200]!r}")
    finally:
        writer.close()
    return out


async def _throughput(port: int, path: str, connections: int, duration_s: float) -> dict:
    request = post_request(port, path, BODY)
    stop_at = time.perf_counter() + duration_s
    counts = {"ok": 0, "errors": 0}

    async def loop() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                writer.write(request)
                status, _ = await read_answer(reader)
                counts["ok" if status == 200 else "errors"] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(connections)))
    return {**counts, "rps": counts["ok"] / (time.perf_counter() - started)}


def _summary(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {"p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench pipeline", description=__doc__)
    parser.add_argument("--requests", type=int, default=1000,
                        help="calls of each at one connection")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds of each at 64 connections")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zeroserve-pipeline-bench-") as tmp:
        port = free_port()
        env = {"ZEROSERVE_LOG_LEVEL": "WARNING",
               "ZEROSERVE_JOBS_STORE_PATH": str(Path(tmp) / "jobs.db")}
        proc = start(serve_argv(SERVICES, port, "--workers", "1", "--slots", "64"), port,
                     Path(tmp) / "serve.log", env)
        try:
            asyncio.run(_latencies(port, "/pipeline/run", 200))  # warm-up
            asyncio.run(_latencies(port, "/whole/run", 200))
            one: dict[str, list[float]] = {"/pipeline/run": [], "/whole/run": []}
            for _ in range(5):  # alternate, so that both see the same machine
                for path in one:
                    one[path] += asyncio.run(_latencies(port, path, args.requests // 5))
            many = {path: asyncio.run(_throughput(port, path, 64, args.duration))
                    for path in ("/whole/run", "/pipeline/run")}
        finally:
            stop(proc)
    c1 = {path: _summary(seconds) for path, seconds in one.items()}
    per_stage = (c1["/pipeline/run"]["p50_ms"] - c1["/whole/run"]["p50_ms"]) / 2
    share = many["/pipeline/run"]["rps"] / many["/whole/run"]["rps"]
    doc = {"time_utc": stamp, "cpus": os.cpu_count(), "c1": c1, "c64": many,
           "added_p50_ms_per_stage": per_stage, "c64_share": share,
           "load_average": os.getloadavg()}
    (args.out / f"pipeline-{stamp}.json").write_text(json.dumps(doc, indent=2))
    print(f"zeroserve pipeline benchmark, {stamp}, {os.cpu_count()} cpus, load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| endpoint | c1 p50 ms | c1 p99 ms | c64 req/s | c64 errors |\n|---|---|---|---|---|")
    for path in ("/whole/run", "/pipeline/run"):
        print(f"| {path} | {c1[path]['p50_ms']:.2f} | {c1[path]['p99_ms']:.2f} | "
              f"{many[path]['rps']:.0f} | {many[path]['errors']} |")
    print(f"\nadded p50 per stage: {per_stage:+.2f} ms; pipeline throughput at 64 connections: "
          f"{share:.2f} of the one endpoint's")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
