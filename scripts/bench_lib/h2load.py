"""Drive ``h2load`` (nghttp2's load generator): HTTP/1.1 routes with ``--h1``, gRPC over HTTP/2.

h2load is a small C program, so on a 2-core host it leaves the server almost all the CPU,
and it sends all three protocols, so one tool compares them. Each connection holds one
request in flight (``-m 1``): the same closed loop as wrk's. Latencies come from its
per-request log (``--log-file``: start, status, microseconds to the end of the response).

gRPC is sent as the HTTP/2 request a gRPC client makes (``content-type:
application/grpc``, ``te: trailers``, a length-prefixed message). h2load cannot read the
``grpc-status`` trailer, so a call counts as OK only when its answer came whole: the data
bytes of the window are compared with the length of a full answer message; every call short
of that is counted under status ``grpc-error``. The smoke request before the window checks
the answer itself.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench_lib.load import LoadFailed, LoadResult, LoadTarget, ToolMissing, run_tool
from bench_lib.oip_wire import grpc_frame
from bench_lib.profiles import LoadTool, Protocol

INSTALL_HINT = (
    "h2load (nghttp2's HTTP/1.1 and HTTP/2 load generator, which sends the gRPC runs) is not "
    "on PATH.\n"
    "Install it with:  sudo apt-get install -y nghttp2-client   (Debian/Ubuntu)\n"
    "             or:  brew install nghttp2                    (macOS)\n"
    "or pass its path with --h2load /path/to/h2load. Its runs are skipped meanwhile.")

_FINISHED = re.compile(r"finished in ([\d.]+)(us|ms|s)")
_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout")
_TRAFFIC = re.compile(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?\((\d+)\) data")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def find_h2load(explicit: str | None) -> str:
    """The h2load binary to use; raises ToolMissing with an install hint."""
    path = shutil.which(explicit or "h2load")
    if path is None:
        raise ToolMissing(INSTALL_HINT)
    return path


def parse_result(stdout: str, log: str, answer_bytes: int = 0) -> LoadResult:
    """h2load's summary (``stdout``) and per-request ``log`` as a LoadResult; with
    ``answer_bytes`` (gRPC), a call is OK only when its answer's data came whole."""
    finished, requests, traffic = (p.search(stdout) for p in (_FINISHED, _REQUESTS, _TRAFFIC))
    if not (finished and requests and traffic):
        raise LoadFailed(f"h2load printed no summary:\n{stdout[-2000:]}")
    duration_s = float(finished.group(1)) * _UNIT_S[finished.group(2)]
    _total, _started, done, _ok, _failed, errored, timeout = map(int, requests.groups())
    data_bytes = int(traffic.group(3))
    rows = [line.split("\t") for line in log.splitlines() if line.strip()]
    status = np.array([int(r[1]) for r in rows], dtype=np.int64)
    micros = np.array([int(r[2]) for r in rows], dtype=np.float64)
    answered = status >= 0  # -1: the stream failed, no response
    codes, counts = np.unique(status[answered], return_counts=True)
    statuses = {str(c): int(n) for c, n in zip(codes, counts)}
    ok = int(np.count_nonzero((status >= 200) & (status < 300)))
    if answer_bytes:
        whole = min(ok, data_bytes // answer_bytes)
        if whole < ok:
            statuses["grpc-error"] = ok - whole
            statuses["200"] -= ok - whole
        ok = whole
    lat = micros[answered] / 1000.0
    pct = (np.percentile(lat, [50, 90, 99, 99.9]) if lat.size else np.zeros(4)).tolist()
    return LoadResult(
        duration_s=duration_s, requests=done, responses_2xx=ok,
        responses_other=int(np.count_nonzero(answered)) - ok,
        statuses={k: v for k, v in sorted(statuses.items()) if v},
        socket_errors={"errored": errored - timeout, "timeout": timeout},
        p50_ms=pct[0], p90_ms=pct[1], p99_ms=pct[2], p999_ms=pct[3],
        mean_ms=float(lat.mean()) if lat.size else 0.0,
        max_ms=float(lat.max()) if lat.size else 0.0, bytes_read=int(traffic.group(1)),
        extra={"data_bytes": data_bytes, "answer_bytes": answer_bytes or None})


class H2loadRunner:
    """Closed-loop load with h2load: HTTP/1.1 for the HTTP routes, HTTP/2 (cleartext, prior
    knowledge) for gRPC, one request in flight per connection."""

    tool = LoadTool.H2LOAD

    def __init__(self, binary: str, work_dir: Path) -> None:
        self.binary = binary
        self.work_dir = work_dir

    def argv(self, target: LoadTarget, body_file: Path, log_file: Path, threads: int,
             connections: int, duration_s: float) -> list[str]:
        headers = [h for name, value in target.headers for h in ("-H", f"{name}: {value}")]
        if target.protocol is Protocol.GRPC:
            headers += ["-H", "te: trailers"]
        else:
            headers.insert(0, "--h1")
        return [self.binary, *headers, f"-t{min(threads, connections)}", f"-c{connections}",
                "-m1", f"-D{duration_s:g}", "-d", str(body_file), f"--log-file={log_file}",
                target.url]

    def run(self, target: LoadTarget, threads: int, connections: int,
            duration_s: float) -> LoadResult:
        """One h2load window. Raises LoadFailed."""
        body_file = target.body_file
        if target.protocol is Protocol.GRPC:
            body_file = target.body_file.with_suffix(".grpc-frame")
            if not body_file.exists():
                body_file.write_bytes(grpc_frame(target.body_file.read_bytes()))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("r", dir=self.work_dir, prefix="h2load-",
                                         suffix=".log") as log:
            argv = self.argv(target, body_file, Path(log.name), threads, connections,
                             duration_s)
            stdout, cpu_s, wall_s = run_tool("h2load", argv, connections, duration_s)
            result = parse_result(stdout, Path(log.name).read_text(),
                                  target.answer_bytes if target.protocol is Protocol.GRPC
                                  else 0)
        return replace(result, tool_cpu_s=cpu_s, tool_wall_s=wall_s)
