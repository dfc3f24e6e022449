"""A 64 MB FP32 input, three ways, in one run: OIP HTTP with Triton's binary tensor extension,
system shared memory copied by the gateway through the broker (``gateway.shm_direct`` off),
and system shared memory read in place by the worker (``gateway.shm_direct`` on: the gateway
sends a reference, the worker maps the region). Two ``zeroserve serve`` servers, one after the
other (shm_direct on: binary and in place; off: copied). Sequential calls through
``tritonclient.http``; end-to-end latency per call (client encoding and, for shared memory, the
copy into the region included) and the server's CPU time per call (every process of the server:
gateway, broker, worker). Each server is asked once which way the input came
(``vector.in_place``), so that a figure never names a path that was not taken.

    scripts/bench shm [--calls 20] [--mib 64]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

from bench_lib.serving import free_port, group_cpu_s, serve_argv, start, stop

SERVICE = "scripts/bench_lib/shm_service.py:Vector"
MODEL = "vector.total"
PATHS = (("binary", "OIP HTTP binary"), ("shm_copied", "shared memory, copied"),
         ("shm_direct", "shared memory, read in place"))


def _measure(name: str, call: Callable[[], float], calls: int, pgid: int) -> dict:
    for _ in range(2):  # warm-up
        call()
    cpu_before = group_cpu_s(pgid)
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        total = call()
        latencies.append(time.perf_counter() - started)
    cpu_ms = 1000 * (group_cpu_s(pgid) - cpu_before) / calls
    figures = {"p50_ms": 1000 * statistics.median(latencies),
               "mean_ms": 1000 * statistics.fmean(latencies),
               "max_ms": 1000 * max(latencies), "server_cpu_ms_per_call": cpu_ms,
               "answer": total}
    print(f"  {name}: p50 {figures['p50_ms']:.1f} ms, mean {figures['mean_ms']:.1f} ms, "
          f"server CPU {cpu_ms:.1f} ms/call", file=sys.stderr)
    return figures


def _serve(x: np.ndarray, calls: int, direct: bool, tmp: Path) -> dict:
    """Start a server (``gateway.shm_direct`` as ``direct``) and measure on it: the shared
    memory path, and with ``direct`` the binary one too."""
    port = free_port()
    env = {"ZEROSERVE_LOG_LEVEL": "WARNING",
           "ZEROSERVE_JOBS_STORE_PATH": str(tmp / f"jobs-{direct}.db"),
           "ZEROSERVE_GATEWAY_SHM_DIRECT": "true" if direct else "false"}
    proc = start(serve_argv([SERVICE], port, "--workers", "1"), port,
                 tmp / f"serve-{direct}.log", env)
    key = f"/zeroserve_bench_{uuid.uuid4().hex[:8]}"
    region = shm.create_shared_memory_region("bench", key, x.nbytes)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}",
                                              connection_timeout=120, network_timeout=120)
    figures: dict = {}
    try:
        client.register_system_shared_memory("bench", key, x.nbytes)

        def shm_input() -> httpclient.InferInput:
            tensor = httpclient.InferInput("x", list(x.shape), "FP32")
            tensor.set_shared_memory("bench", x.nbytes)
            return tensor

        def binary() -> float:
            tensor = httpclient.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=True)
            return float(client.infer(MODEL, [tensor]).as_numpy("output")[0])

        def shared() -> float:
            shm.set_shared_memory_region(region, [x])
            return float(client.infer(MODEL, [shm_input()]).as_numpy("output")[0])

        if direct:
            figures["binary"] = _measure("HTTP binary", binary, calls, proc.pid)
        path = "shm_direct" if direct else "shm_copied"
        figures[path] = _measure(dict(PATHS)[path], shared, calls, proc.pid)
        shm.set_shared_memory_region(region, [x])
        in_place = client.infer("vector.in_place", [shm_input()]).as_numpy("output")
        assert bool(in_place[0]) is direct, f"{path}: the worker's input was " + \
            ("copied" if direct else "read in place")
        client.unregister_system_shared_memory()
    finally:
        client.close()
        shm.destroy_shared_memory_region(region)
        stop(proc)
    return figures


def run(calls: int, mib: int) -> dict:
    x = np.random.default_rng(0).random(mib * 1024 * 1024 // 4, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="zeroserve-shm-bench-") as tmp:
        return {**_serve(x, calls, True, Path(tmp)), **_serve(x, calls, False, Path(tmp))}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_lib.shm_bench", description=__doc__)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--mib", type=int, default=64)
    args = parser.parse_args(argv)
    figures = run(args.calls, args.mib)
    b = figures["binary"]
    for path, _ in PATHS:
        assert abs(figures[path]["answer"] - b["answer"]) <= 1e-6 * abs(b["answer"]), figures
    print(f"{args.mib} MiB FP32 input, {args.calls} sequential calls, {os.cpu_count()} cpus\n")
    print("| path | p50 ms | mean ms | server CPU ms/call |\n|---|---|---|---|")
    for path, name in PATHS:
        f = figures[path]
        print(f"| {name} | {f['p50_ms']:.1f} | {f['mean_ms']:.1f} | "
              f"{f['server_cpu_ms_per_call']:.1f} |")
    for path, name in PATHS[1:]:
        s = figures[path]
        print(f"\n{name} / binary: latency {s['p50_ms'] / b['p50_ms']:.2f}, server CPU "
              f"{s['server_cpu_ms_per_call'] / b['server_cpu_ms_per_call']:.2f}")
    c, d = figures["shm_copied"], figures["shm_direct"]
    print(f"\nread in place / copied: latency {d['p50_ms'] / c['p50_ms']:.2f}, server CPU "
          f"{d['server_cpu_ms_per_call'] / c['server_cpu_ms_per_call']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
