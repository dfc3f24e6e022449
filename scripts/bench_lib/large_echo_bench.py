"""``scripts/bench large-echo``: a large FP32 tensor echoed by an endpoint, one call at a time,
against a bare tornado server that echoes the same bytes.

One ``zeroserve serve`` of ``scripts/bench_lib/large_echo_service.py`` (``echo.same`` returns
its ``(-1,)`` float32 input) with one worker, on free loopback ports, called in turn through:

- ``oip_http``: ``tritonclient.http``, the input and the requested output as binary tensors;
- ``oip_grpc``: ``tritonclient.grpc`` ``ModelInfer`` (raw contents both ways);
- ``sdk``: ``zeroserve.Client("http://...").call(...)``, the SDK's default transport (the REST
  route, msgpack bodies with the tensor's bytes inline);

and the baseline, ``bare``: ``scripts/bench_lib/byte_echo_server.py`` (tornado answering a
POST with its body) in its own process, called with ``http.client`` on one kept-alive
connection (the cheapest honest client here: one ``sendall`` of the headers and body, one
``read`` of the answer), the same ``--mib`` bytes as ``application/octet-stream``.

Each path: 2 warm-up calls, the echoed bytes checked equal to the input once, then ``--calls``
sequential calls. Then each path's client floor: the same client against
``scripts/bench_lib/replay_server.py``, a bare tornado (and grpc.aio) server answering the
gateway's own answer, recorded on the first call: what is left of the path's latency when the
cluster costs nothing, the part of the ratio that no server change can take.

Prints p50 and p90 latency (client included), the ratio of each p50 to the bare echo's p50,
the server's CPU time per call (user + system of every process of the server's process group:
gateway, broker, worker; for ``bare``, the echo process) and each client floor, and writes
``large-echo-<time>.json`` under ``--out``.

    scripts/bench large-echo [--calls 20] [--mib 16]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench_lib.serving import REPO, free_port, group_cpu_s, serve_argv, start, stop

SERVICE = "scripts/bench_lib/large_echo_service.py:Echo"
MODEL = "echo.same"
TARGET_RATIO = 1.5
PATHS = (("bare", "bare tornado echo (http.client)"),
         ("oip_http", "OIP HTTP binary (tritonclient.http)"),
         ("oip_grpc", "OIP gRPC (tritonclient.grpc)"),
         ("sdk", "SDK call (zeroserve.Client, http://)"))


def _percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def _measure(name: str, call: Callable[[], np.ndarray], x: np.ndarray, calls: int,
             pgid: int) -> dict:
    for _ in range(2):  # warm-up
        call()
    echoed = call()
    if echoed.dtype != x.dtype or echoed.shape != x.shape or \
            echoed.tobytes() != x.tobytes():
        raise RuntimeError(f"{name}: the echoed tensor differs from the input")
    del echoed
    cpu_before = group_cpu_s(pgid)
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
    cpu_ms = 1000 * (group_cpu_s(pgid) - cpu_before) / calls
    ordered = sorted(latencies)
    figures = {"p50_ms": 1000 * statistics.median(ordered),
               "p90_ms": 1000 * _percentile(ordered, 0.9),
               "mean_ms": 1000 * statistics.fmean(ordered), "max_ms": 1000 * ordered[-1],
               "server_cpu_ms_per_call": cpu_ms}
    print(f"  {name}: p50 {figures['p50_ms']:.1f} ms, p90 {figures['p90_ms']:.1f} ms, "
          f"server CPU {cpu_ms:.1f} ms/call", file=sys.stderr)
    return figures


def _bare(x: np.ndarray, calls: int, tmp: Path) -> dict:
    port = free_port()
    argv = [sys.executable, str(REPO / "scripts/bench_lib/byte_echo_server.py"),
            "--port", str(port)]
    proc = start(argv, port, tmp / "bare.log", {})
    body = x.tobytes()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/octet-stream"}

    def call() -> np.ndarray:
        conn.request("POST", "/echo", body=body, headers=headers)
        answer = conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"bare echo answered {answer.status}")
        return np.frombuffer(data, np.float32)

    try:
        return _measure("bare", call, x, calls, proc.pid)
    finally:
        conn.close()
        stop(proc)


class _Clients:
    """The three zeroserve paths' clients, aimed at one gateway's HTTP and gRPC ports."""

    def __init__(self, port: int, grpc_port: int) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        import zeroserve

        self.http = httpclient.InferenceServerClient(
            f"127.0.0.1:{port}", connection_timeout=120, network_timeout=120)
        self.grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        self.sdk = zeroserve.Client(f"http://127.0.0.1:{port}")

    def calls(self, x: np.ndarray) -> dict[str, Callable[[], np.ndarray]]:
        """A call per path (``PATHS`` after the bare one), each echoing ``x``."""
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        def oip_http() -> np.ndarray:
            tensor = httpclient.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=True)
            wanted = [httpclient.InferRequestedOutput("output", binary_data=True)]
            return self.http.infer(MODEL, [tensor], outputs=wanted).as_numpy("output")

        def oip_grpc() -> np.ndarray:
            tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            return self.grpc.infer(MODEL, [tensor], client_timeout=120).as_numpy("output")

        def sdk() -> np.ndarray:
            return np.asarray(self.sdk.call("echo", "same", x=x, timeout=120))

        return {"oip_http": oip_http, "oip_grpc": oip_grpc, "sdk": sdk}

    def close(self) -> None:
        self.sdk.close()
        self.grpc.close()
        self.http.close()


def _zeroserve(x: np.ndarray, calls: int, tmp: Path) -> dict:
    """The three paths through the cluster, then each client's floor: the same client
    against ``replay_server.py``, which answers the gateway's recorded answer."""
    port, grpc_port = free_port(), free_port()
    argv = serve_argv([SERVICE], port, "--workers", "1")
    argv[argv.index("--grpc-port") + 1] = str(grpc_port)
    env = {"ZEROSERVE_LOG_LEVEL": "WARNING",
           "ZEROSERVE_JOBS_STORE_PATH": str(tmp / "jobs.db"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    proc = start(argv, port, tmp / "serve.log", env)
    figures: dict = {}
    try:
        clients = _Clients(port, grpc_port)
        try:
            for name, call in clients.calls(x).items():
                figures[name] = _measure(name, call, x, calls, proc.pid)
        finally:
            clients.close()
        replay_port, replay_grpc_port = free_port(), free_port()
        replay = start([sys.executable, str(REPO / "scripts/bench_lib/replay_server.py"),
                        "--port", str(replay_port), "--upstream", f"127.0.0.1:{port}",
                        "--grpc-port", str(replay_grpc_port),
                        "--grpc-upstream", f"127.0.0.1:{grpc_port}"],
                       replay_port, tmp / "replay.log", {})
        clients = _Clients(replay_port, replay_grpc_port)
        try:
            for name, call in clients.calls(x).items():
                figures[name]["floor"] = _measure(f"{name} floor", call, x, calls, replay.pid)
        finally:
            clients.close()
            stop(replay)
    finally:
        stop(proc)
    return figures


def run(calls: int, mib: int) -> dict:
    """Every path's figures (``PATHS``), the bare echo first."""
    x = np.random.default_rng(0).random(mib * 1024 * 1024 // 4, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="zeroserve-large-echo-") as tmp:
        return {"bare": _bare(x, calls, Path(tmp)), **_zeroserve(x, calls, Path(tmp))}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench large-echo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20, help="measured calls per path")
    parser.add_argument("--mib", type=int, default=16, help="the tensor's size in MiB")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    if args.calls < 1 or args.mib < 1:
        parser.error("--calls and --mib must be at least 1")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    figures = run(args.calls, args.mib)
    bare = figures["bare"]["p50_ms"]
    for f in figures.values():
        f["p50_over_bare"] = f["p50_ms"] / bare
        if "floor" in f:
            f["floor"]["p50_over_bare"] = f["floor"]["p50_ms"] / bare
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    doc = {"time_utc": stamp, "cpus": os.cpu_count(), "mib": args.mib, "calls": args.calls,
           "commit": commit, "load_average_before": load_before,
           "load_average_after": Path("/proc/loadavg").read_text().split()[:3],
           "target_p50_over_bare": TARGET_RATIO, "paths": figures}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"large-echo-{stamp}.json").write_text(json.dumps(doc, indent=2))
    print(f"{args.mib} MiB FP32 tensor echoed, {args.calls} sequential calls per path after 2 "
          f"warm-ups, {os.cpu_count()} cpus, load average {' '.join(load_before)} (before) "
          f"{' '.join(doc['load_average_after'])} (after), commit {commit}\n")
    print("| path | p50 ms | p90 ms | p50 / bare | server CPU ms/call "
          "| client floor: p50 ms, / bare |\n|---|---|---|---|---|---|")
    for path, name in PATHS:
        f = figures[path]
        floor = f.get("floor")
        floor_cell = "" if floor is None else \
            f"{floor['p50_ms']:.1f}, {floor['p50_over_bare']:.2f}"
        print(f"| {name} | {f['p50_ms']:.1f} | {f['p90_ms']:.1f} | "
              f"{f['p50_over_bare']:.2f} | {f['server_cpu_ms_per_call']:.1f} | {floor_cell} |")
    missed = [path for path, _ in PATHS[1:] if figures[path]["p50_over_bare"] > TARGET_RATIO]
    print(f"\ntarget p50 <= {TARGET_RATIO} x bare: "
          + ("met on every path" if not missed else f"missed on {', '.join(missed)}"))
    return 0
