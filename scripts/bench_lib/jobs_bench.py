"""``scripts/bench jobs``: what async jobs cost real-time serving, and how fast jobs flow.

1. Real-time p99 of the `overhead-c64` load (mlp, 64 connections, 2 wrk threads, one worker)
   alone, then while a CPU-heavy job (pure-Python loop) runs in the same worker's job lane;
   the ratio of the two p99s.
2. Jobs per second for 1,000 no-op jobs: from the first submission until all succeeded.

Starts ``zeroserve serve`` on free ports with a job store in a temporary folder, stops it
(process group) whatever happens, prints a markdown table and writes ``jobs-<time>.json``.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench_lib.serving import free_port, start, stop

SERVICE = "scripts/bench_lib/jobs_service.py:MLPWithJobs"
_ROW = ", ".join(["0.1"] * 64)
_LUA = f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{{"x": [[{_ROW}]]}}'
"""


def _http(port: int, method: str, path: str, body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def _wrk(port: int, lua: Path, duration_s: float) -> dict:
    """One closed-loop wrk window at 64 connections: requests/s and latency percentiles (ms)."""
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{duration_s:g}s", "--latency", "-s",
                          str(lua), f"http://127.0.0.1:{port}/mlp/predict"],
                         capture_output=True, text=True, timeout=duration_s + 60, check=True).stdout
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    pct = {m[0]: float(m[1]) * units[m[2]]
           for m in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": pct["50"], "p90_ms": pct["90"], "p99_ms": pct["99"],
            "errors": int(non2xx.group(1)) if non2xx else 0}


def _wait_state(port: int, job_id: str, states: tuple, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, job = _http(port, "GET", f"/v1/jobs/{job_id}")
        if status == 200 and isinstance(job, dict) and job["state"] in states:
            return job
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} never reached {states}")


def _noop_jobs(port: int, count: int) -> dict:
    started = time.monotonic()
    with cf.ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda _: _http(port, "POST", "/v1/jobs", {
            "service": "mlp", "endpoint": "noop", "inputs": {}})[1]["id"], range(count)))
    submitted = time.monotonic()
    for job_id in reversed(ids):
        _wait_state(port, job_id, ("succeeded",), 120.0)
    done = time.monotonic()
    succeeded, cursor = 0, 0
    while cursor is not None:
        _, page = _http(port, "GET", f"/v1/jobs?state=succeeded&limit=1000&cursor={cursor}")
        assert isinstance(page, dict), page
        succeeded, cursor = succeeded + len(page["jobs"]), page["next_cursor"]
    return {"jobs": count, "succeeded": succeeded,
            "submit_s": submitted - started, "total_s": done - started,
            "submitted_per_s": count / (submitted - started),
            "jobs_per_s": count / (done - started)}


def _start(work: Path, ports: dict, log: Path) -> subprocess.Popen:
    env = {"ZEROSERVE_JOBS_STORE_PATH": str(work / "jobs.sqlite3"),
           "ZEROSERVE_WORKER_JOB_SLOTS": "1", "ZEROSERVE_LOG_LEVEL": "WARNING"}
    argv = [sys.executable, "-m", "zeroserve", "serve", SERVICE, "--workers", "1",
            "--http-port", str(ports["http"]), "--grpc-port", "0",
            "--metrics-port", str(ports["metrics"]), "--host", "127.0.0.1",
            "--frontend", f"tcp://127.0.0.1:{ports['front']}",
            "--backend", f"tcp://127.0.0.1:{ports['back']}"]
    return start(argv, ports["http"], log, env)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench jobs", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk window")
    parser.add_argument("--jobs", type=int, default=1000, help="no-op jobs to run")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("scripts/bench jobs: wrk is missing (sudo apt-get install -y wrk)", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zeroserve-jobs-bench-") as tmp:
        work = Path(tmp)
        lua = work / "post.lua"
        lua.write_text(_LUA)
        ports = {"http": free_port(), "front": free_port(), "back": free_port(),
                 "metrics": free_port()}
        proc = _start(work, ports, args.out / f"jobs-{stamp}.log")
        try:
            _wrk(ports["http"], lua, 3.0)  # warm-up
            alone = _wrk(ports["http"], lua, args.duration)
            _, burn = _http(ports["http"], "POST", "/v1/jobs", {
                "service": "mlp", "endpoint": "burn", "inputs": {"seconds": args.duration + 30}})
            burn_id = burn["id"]  # type: ignore[index]
            _wait_state(ports["http"], burn_id, ("running",))
            time.sleep(0.5)
            loaded = _wrk(ports["http"], lua, args.duration)
            _http(ports["http"], "DELETE", f"/v1/jobs/{burn_id}")
            _wait_state(ports["http"], burn_id, ("cancelled", "succeeded", "failed"))
            jobs = _noop_jobs(ports["http"], args.jobs)
        finally:
            stop(proc)
    ratio = loaded["p99_ms"] / alone["p99_ms"]
    doc = {"time_utc": stamp, "cpus": os.cpu_count(), "duration_s": args.duration,
           "realtime_alone": alone, "realtime_with_cpu_job": loaded, "p99_ratio": ratio,
           "noop_jobs": jobs}
    (args.out / f"jobs-{stamp}.json").write_text(json.dumps(doc, indent=2))
    print(f"zeroserve jobs benchmark, {stamp}, {os.cpu_count()} cpus, "
          f"{args.duration:g}s windows\n")
    print("| run | req/s | p50 ms | p99 ms |\n|---|---|---|---|")
    for name, r in (("overhead-c64 alone", alone), ("overhead-c64 + CPU-heavy job", loaded)):
        print(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    print(f"\np99 ratio (with job / alone): {ratio:.2f}")
    print(f"{jobs['jobs']} no-op jobs: {jobs['jobs_per_s']:.0f} jobs/s end to end "
          f"({jobs['total_s']:.2f} s; submissions alone {jobs['submitted_per_s']:.0f}/s), "
          f"{jobs['succeeded']} succeeded")
    return 0
