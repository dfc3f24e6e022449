"""``scripts/bench streams``: SSE streams through zeroserve against a bare tornado SSE server.

Both answer ``POST /tokens/generate`` with the same stream: 200 small chunks (``"token{i}"``),
each flushed as it is produced, then a done event (zeroserve: the async generator of
``scripts/bench_lib/stream_service.py`` behind ``zeroserve serve``, one worker; the baseline:
``scripts/bench_lib/sse_server.py``). Measured in one run, servers one after the other:

1. chunks/s with 64 and with 256 concurrent streams (each stream a keep-alive connection that
   starts its next stream when one ends), for ``--duration`` seconds each (the worker has
   512 slots: a stream holds one while it runs);
2. time to first chunk of one stream at a time (median and p99 of ``--ttfc-streams``);
3. server CPU per chunk (user + system seconds of every process of the server, over the
   window, divided by the chunks it sent).

The client is a minimal asyncio HTTP/1.1 reader in this process, the same for both servers.
Prints a markdown table with the ratios and writes ``streams-<time>.json`` under ``--out``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVICE = "scripts/bench_lib/stream_service.py:Tokens"
CHUNKS = 200
SLOTS = 512
_TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(port: int) -> bytes:
    body = json.dumps({"n": CHUNKS}).encode()
    return (f"POST /tokens/generate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _one_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      request: bytes) -> tuple[int, float]:
    """Send one stream's request on a kept-alive connection and read it to its end: the
    number of chunks and the seconds to the first one."""
    sent = time.perf_counter()
    writer.write(request)
    first = 0.0
    data = b""
    while not data.endswith(b"0\r\n\r\n") or b"event: done" not in data:
        piece = await reader.read(65536)
        if not piece:
            raise ConnectionError("the server closed the stream")
        if not first and b"data: " in piece:
            first = time.perf_counter() - sent
        data += piece
    return data.count(b"data: ") - 1, first  # the done event has a data line too


async def _streams(port: int, concurrency: int, duration_s: float) -> dict:
    """``concurrency`` connections streaming back to back for ``duration_s``."""
    request = _request(port)
    stop_at = time.perf_counter() + duration_s
    totals = {"streams": 0, "chunks": 0, "errors": 0}

    async def loop() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                try:
                    chunks, _ = await _one_stream(reader, writer, request)
                except (ConnectionError, OSError):
                    totals["errors"] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                totals["streams"] += 1
                totals["chunks"] += chunks
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {**totals, "seconds": elapsed, "chunks_per_s": totals["chunks"] / elapsed}


async def _first_chunks(port: int, streams: int) -> dict:
    request = _request(port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    firsts = []
    try:
        for _ in range(streams):
            firsts.append((await _one_stream(reader, writer, request))[1])
    finally:
        writer.close()
    firsts.sort()
    return {"streams": streams, "p50_ms": 1000 * statistics.median(firsts),
            "p99_ms": 1000 * firsts[min(len(firsts) - 1, int(len(firsts) * 0.99))]}


def _group_cpu_s(pgid: int) -> float:
    """User + system seconds of every live process in process group ``pgid``."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ...
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def _wait_ready(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"server not ready; see {log}")


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _start(name: str, work: Path) -> tuple[subprocess.Popen, int, Path]:
    port = _free_port()
    log = work / f"{name}.log"
    if name == "baseline":
        argv = [sys.executable, "scripts/bench_lib/sse_server.py", "--port", str(port),
                "--chunks", str(CHUNKS)]
    else:
        # a stream holds a slot while it runs: enough slots for every concurrent stream
        argv = [sys.executable, "-m", "zeroserve", "serve", SERVICE, "--workers", "1",
                "--slots", str(SLOTS),
                "--http-port", str(port), "--grpc-port", "0", "--metrics-port", "0",
                "--host", "127.0.0.1", "--frontend", f"tcp://127.0.0.1:{_free_port()}",
                "--backend", f"tcp://127.0.0.1:{_free_port()}"]
    env = {**os.environ, "ZEROSERVE_LOG_LEVEL": "WARNING",
           "ZEROSERVE_JOBS_STORE_PATH": str(work / "jobs.sqlite3")}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(port, proc, log)
    except BaseException:
        _stop(proc)
        raise
    return proc, port, log


def measure(name: str, work: Path, concurrencies: list[int], duration_s: float,
            ttfc_streams: int) -> dict:
    """Every figure of one server."""
    proc, port, _ = _start(name, work)
    try:
        asyncio.run(_streams(port, 8, 2.0))  # warm-up
        figures: dict = {"load": {}}
        for concurrency in concurrencies:
            cpu_before = _group_cpu_s(proc.pid)
            load = asyncio.run(_streams(port, concurrency, duration_s))
            load["cpu_us_per_chunk"] = 1e6 * (_group_cpu_s(proc.pid) - cpu_before) / max(
                load["chunks"], 1)
            figures["load"][concurrency] = load
            print(f"  {name} c{concurrency}: {load['chunks_per_s']:.0f} chunks/s, "
                  f"{load['cpu_us_per_chunk']:.1f} us CPU/chunk, {load['errors']} errors",
                  file=sys.stderr)
        figures["first_chunk"] = asyncio.run(_first_chunks(port, ttfc_streams))
        return figures
    finally:
        _stop(proc)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench streams", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds per concurrency level")
    parser.add_argument("--concurrency", default="64,256")
    parser.add_argument("--ttfc-streams", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zeroserve-streams-bench-") as tmp:
        figures = {name: measure(name, Path(tmp), levels, args.duration, args.ttfc_streams)
                   for name in ("baseline", "zeroserve")}
    base, zs = figures["baseline"], figures["zeroserve"]
    doc = {"time_utc": stamp, "cpus": os.cpu_count(), "chunks_per_stream": CHUNKS,
           "duration_s": args.duration, **figures}
    (args.out / f"streams-{stamp}.json").write_text(json.dumps(doc, indent=2))
    print(f"zeroserve streams benchmark, {stamp}, {os.cpu_count()} cpus, {CHUNKS} chunks per "
          f"stream, {args.duration:g}s per level\n")
    print("| streams | baseline chunks/s | zeroserve chunks/s | ratio | baseline CPU us/chunk "
          "| zeroserve CPU us/chunk |\n|---|---|---|---|---|---|")
    for level in levels:
        b, z = base["load"][level], zs["load"][level]
        print(f"| {level} | {b['chunks_per_s']:.0f} | {z['chunks_per_s']:.0f} | "
              f"{z['chunks_per_s'] / b['chunks_per_s']:.2f} | {b['cpu_us_per_chunk']:.1f} | "
              f"{z['cpu_us_per_chunk']:.1f} |")
    bf, zf = base["first_chunk"], zs["first_chunk"]
    print(f"\ntime to first chunk, one stream at a time ({bf['streams']} streams): baseline "
          f"p50 {bf['p50_ms']:.2f} ms, zeroserve p50 {zf['p50_ms']:.2f} ms (added "
          f"{zf['p50_ms'] - bf['p50_ms']:+.2f} ms); p99 {bf['p99_ms']:.2f} / "
          f"{zf['p99_ms']:.2f} ms")
    return 0
