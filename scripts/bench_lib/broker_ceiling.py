"""``scripts/bench --profile broker-ceiling``: how many round trips the broker routes, against the
least a pyzmq broker can do.

Two systems, measured one after the other in the same run, each for ``duration`` seconds per
window after a short warm-up:

- zeroserve: one broker (``zeroserve broker``) and one worker serving
  ``bench_lib/echo_service.py`` (an endpoint that returns its input), each its own process;
- the bare forwarder (:mod:`bench_lib.bare_forwarder`): a ROUTER/ROUTER loop and an echoing
  DEALER, each its own process.

The client is a DEALER in this process that keeps ``window`` requests in flight (1, 16, 256)
and sends the same 256-byte payload: REQUEST frames built with ``zeroserve.wire`` for the
broker, ``[request id, payload]`` for the forwarder. Reported: round trips per second, the
broker's as a share of the forwarder's at the same window, and the CPU time each server
process spent per round trip (from ``/proc/PID/stat``), which stays meaningful on a shared
machine where the rates do not.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import zmq

from bench_lib import bare_forwarder
from bench_lib.serving import REPO, free_port, stop

NAME = "broker-ceiling"
SUMMARY = ("pipelined ZeroMQ clients straight to the broker, one echo worker, windows 1/16/256; "
           "round trips/s against a bare pyzmq forwarder in the same run")
MAX_WINDOW_S = 3.0  # six windows (three per system) of at most this, after a warm-up each
WINDOWS = (1, 16, 256)
PAYLOAD = bytes(range(256))
_TICKS = os.sysconf("SC_CLK_TCK")
_OK = (200).to_bytes(2, "big")  # the status frame of an OK REPLY


@dataclass
class Window:
    """One measured window of one system."""

    system: str
    window: int
    round_trips: int
    seconds: float
    cpu_us: dict  # process name -> CPU microseconds per round trip

    @property
    def per_s(self) -> float:
        return self.round_trips / self.seconds


def cpu_s(pid: int) -> float:
    """User + system seconds process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def pipelined(sock: zmq.Socket, make: Callable[[int], list], check: Callable[[list], None],
              window: int, duration_s: float) -> tuple[int, float]:
    """Keep ``window`` requests in flight for ``duration_s``; the answers and the seconds."""
    sent = done = 0
    started = time.perf_counter()
    stop_at = started + duration_s
    stopping = False
    while True:
        while not stopping and sent - done < window:
            sock.send_multipart(make(sent), copy=False)
            sent += 1
        check(sock.recv_multipart())
        done += 1
        if not stopping and done % 32 == 0 and time.perf_counter() >= stop_at:
            stopping = True
        if stopping and done == sent:
            return done, time.perf_counter() - started


def measure(system: str, front: str, pids: dict[str, int], make: Callable[[int], list],
            check: Callable[[list], None], duration_s: float, warmup_s: float) -> list[Window]:
    """Each window of :data:`WINDOWS` against the server at ``front``."""
    ctx = zmq.Context.instance()
    out = []
    for window in WINDOWS:
        sock = ctx.socket(zmq.DEALER)
        sock.connect(front)
        try:
            pipelined(sock, make, check, window, warmup_s)
            before = {name: cpu_s(pid) for name, pid in pids.items()}
            count, seconds = pipelined(sock, make, check, window, duration_s)
            used = {name: round((cpu_s(pid) - before[name]) * 1e6 / count, 1)
                    for name, pid in pids.items()}
        finally:
            sock.close(0)
        out.append(Window(system, window, count, seconds, used))
        print(f"broker-ceiling: {system} window {window}: {count / seconds:,.0f} round trips/s",
              file=sys.stderr)
    return out


def _zeroserve_frames() -> tuple[Callable[[int], list], Callable[[list], None]]:
    from zeroserve.wire import codec
    from zeroserve.wire.frontend import Request

    meta, body = codec.encode({"x": PAYLOAD})
    assert not body

    def make(n: int) -> list:
        return Request(b"%d" % n, "echo", "echo", 10_000, meta).to_frames()

    def check(frames: list) -> None:
        if frames[3] != _OK:
            raise RuntimeError(f"the broker answered {frames[2:5]!r}")
    return make, check


def _wait_until_served(front: str, make: Callable[[int], list], deadline_s: float) -> None:
    """Send a request a second until one is answered OK (the worker has registered)."""
    from zeroserve.wire import codec

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(front)
    try:
        give_up = time.monotonic() + deadline_s
        while time.monotonic() < give_up:
            sock.send_multipart(make(0))
            if sock.poll(1000):
                frames = sock.recv_multipart()
                if frames[3] == _OK:
                    if codec.decode(frames[4], frames[5:]) != PAYLOAD:
                        raise RuntimeError("the echo worker answered another value")
                    return
                time.sleep(0.2)
        raise RuntimeError("the broker and its echo worker did not answer in time")
    finally:
        sock.close(0)


def measure_zeroserve(work_dir: Path, duration_s: float, warmup_s: float) -> list[Window]:
    front, back = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    py = [sys.executable, "-m", "zeroserve"]
    common = ["--cluster", "broker-ceiling", "--log-level", "warning"]
    broker_argv = [*py, "broker", "--frontend", front, "--backend", back, "--metrics-port", "0",
                   "--job-store", str(work_dir / "jobs.sqlite3"), *common]
    worker_argv = [*py, "worker", "scripts/bench_lib/echo_service.py", "--backend", back,
                   "--frontend", front, "--job-slots", "0", *common]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    procs: list[subprocess.Popen] = []
    try:
        for name, argv in (("broker", broker_argv), ("worker", worker_argv)):
            log = (work_dir / f"{name}.log").open("wb")
            procs.append(subprocess.Popen(argv, cwd=REPO, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        make, check = _zeroserve_frames()
        _wait_until_served(front, make, 60.0)
        pids = {"broker": procs[0].pid, "worker": procs[1].pid}
        if os.environ.get("BROKER_CEILING_PIDS"):  # for a profiler to attach to
            Path(os.environ["BROKER_CEILING_PIDS"]).write_text(json.dumps(pids))
        return measure("zeroserve", front, pids, make, check, duration_s, warmup_s)
    finally:
        for proc in procs:
            stop(proc)


def measure_forwarder(duration_s: float, warmup_s: float) -> list[Window]:
    front, back = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    procs = bare_forwarder.start(front, back)
    try:
        time.sleep(0.5)

        def make(n: int) -> list:
            return [b"%d" % n, PAYLOAD]

        def check(frames: list) -> None:
            if frames[1] != PAYLOAD:
                raise RuntimeError("the forwarder answered another payload")
        pids = {"forwarder": procs[0].pid, "worker": procs[1].pid}
        return measure("bare forwarder", front, {k: p for k, p in pids.items() if p},
                       make, check, duration_s, warmup_s)
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(5)


def table(zs: list[Window], bare: list[Window]) -> str:
    lines = ["| window | zeroserve round trips/s | bare forwarder round trips/s | ratio | "
             "broker µs CPU / rt | zeroserve worker µs CPU / rt | forwarder µs CPU / rt | "
             "echo DEALER µs CPU / rt |",
             "|---|---|---|---|---|---|---|---|"]
    for z, b in zip(zs, bare, strict=True):
        lines.append(f"| {z.window} | {z.per_s:,.0f} | {b.per_s:,.0f} | "
                     f"{z.per_s / b.per_s:.2f} | {z.cpu_us['broker']:.0f} | "
                     f"{z.cpu_us['worker']:.0f} | {b.cpu_us['forwarder']:.0f} | "
                     f"{b.cpu_us['worker']:.0f} |")
    return "\n".join(lines)


def run(out: Path, duration_s: float, warmup_s: float) -> str:
    """Measure both systems; write ``broker-ceiling-<time>.json`` under ``out`` and return the
    markdown table."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="broker-ceiling-") as tmp:
        zs = measure_zeroserve(Path(tmp), duration_s, warmup_s)
    bare = measure_forwarder(duration_s, warmup_s)
    markdown = (f"broker-ceiling, {stamp}, {os.cpu_count()} cpus, {duration_s:g}s windows, "
                f"load average before {load_before[0]:.2f}\n\n{table(zs, bare)}")
    document = {"time_utc": stamp, "load_average_before": load_before,
                "duration_s": duration_s, "warmup_s": warmup_s,
                "windows": [{**asdict(w), "per_s": w.per_s} for w in zs + bare],
                "ratios": {w.window: w.per_s / b.per_s for w, b in zip(zs, bare, strict=True)}}
    path = out / f"broker-ceiling-{stamp}.json"
    path.write_text(json.dumps(document, indent=2))
    print(f"scripts/bench: wrote {path}", file=sys.stderr)
    return markdown
