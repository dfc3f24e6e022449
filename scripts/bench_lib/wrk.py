"""Drive ``wrk`` with ``post_json.lua`` and parse the line its ``done()`` prints."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from bench_lib.load import LoadFailed, LoadResult, LoadTarget, ToolMissing, run_tool
from bench_lib.profiles import LoadTool, Protocol

LUA_SCRIPT = Path(__file__).resolve().parent / "post_json.lua"
RESULT_PREFIX = "BENCH_RESULT "

INSTALL_HINT = (
    "wrk, the HTTP load generator, is not on PATH.\n"
    "Install it with:  sudo apt-get install -y wrk   (Debian/Ubuntu; as root drop sudo)\n"
    "             or:  brew install wrk              (macOS)\n"
    "or pass its path with --wrk /path/to/wrk.")


def find_wrk(explicit: str | None) -> str:
    """The wrk binary to use; raises ToolMissing with an install hint."""
    path = shutil.which(explicit or "wrk")
    if path is None:
        raise ToolMissing(INSTALL_HINT)
    return path


def parse_result(stdout: str) -> LoadResult:
    """Parse the ``BENCH_RESULT {json}`` line of ``post_json.lua``'s ``done()``."""
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            raw = json.loads(line[len(RESULT_PREFIX):])
            break
    else:
        raise LoadFailed(f"wrk printed no {RESULT_PREFIX.strip()} line:\n{stdout[-2000:]}")
    lat = {k: v / 1000.0 for k, v in raw["latency_us"].items()}
    errors = dict(raw["errors"])
    errors.pop("status", None)  # non-2xx answers are counted by status instead
    return LoadResult(
        duration_s=raw["duration_us"] / 1e6, requests=raw["requests"],
        responses_2xx=raw["responses_2xx"], responses_other=raw["responses_other"],
        statuses=dict(sorted(raw["statuses"].items())), socket_errors=errors,
        p50_ms=lat["p50"], p90_ms=lat["p90"], p99_ms=lat["p99"], p999_ms=lat["p999"],
        mean_ms=lat["mean"], max_ms=lat["max"], bytes_read=raw["bytes"])


class WrkRunner:
    """Closed-loop POST load on an HTTP target; its body is sent on every request."""

    tool = LoadTool.WRK

    def __init__(self, binary: str, timeout_s: float = 10.0) -> None:
        self.binary = binary
        self.timeout_s = timeout_s

    def argv(self, target: LoadTarget, threads: int, connections: int,
             duration_s: float) -> list[str]:
        headers = [f"{name}: {value}" for name, value in target.headers]
        return [self.binary, f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s",
                f"--timeout={self.timeout_s:g}s", "-s", str(LUA_SCRIPT), target.url,
                "--", str(target.body_file), *headers]

    def run(self, target: LoadTarget, threads: int, connections: int,
            duration_s: float) -> LoadResult:
        """One wrk window; killed if it overruns by 30 s. Raises LoadFailed."""
        if target.protocol is Protocol.GRPC:
            raise LoadFailed("wrk cannot send gRPC")
        stdout, cpu_s, wall_s = run_tool("wrk", self.argv(target, threads, connections, duration_s),
                                 connections, duration_s)
        return replace(parse_result(stdout), tool_cpu_s=cpu_s, tool_wall_s=wall_s)
