"""What the stand-alone benchmarks (``scripts/bench streams``, ``scripts/bench pipeline``)
share: free ports, a server started in its own process group and stopped with it, its CPU
time, and a minimal asyncio HTTP/1.1 client that keeps its connection alive."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def group_cpu_s(pgid: int) -> float:
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


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def start(argv: list[str], port: int, log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a server in its own process group and wait until ``/readyz`` answers 200."""
    proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, **env}, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"server not ready; see {log}")


def serve_argv(targets: list[str], port: int, *extra: str) -> list[str]:
    """``zeroserve serve`` of ``targets`` on ``port`` (and free broker ports), no gRPC."""
    return [sys.executable, "-m", "zeroserve", "serve", *targets, "--http-port", str(port),
            "--grpc-port", "0", "--metrics-port", "0", "--host", "127.0.0.1",
            "--frontend", f"tcp://127.0.0.1:{free_port()}",
            "--backend", f"tcp://127.0.0.1:{free_port()}", *extra]


def post_request(port: int, path: str, body: object, accept: str = "application/json") -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nAccept: {accept}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 answer with a Content-Length body: its status and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)
