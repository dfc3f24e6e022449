"""Drive ``wrk`` with ``post_json.lua`` and parse the line its ``done()`` prints."""
from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

LUA_SCRIPT = Path(__file__).resolve().parent / "post_json.lua"
RESULT_PREFIX = "BENCH_RESULT "

INSTALL_HINT = (
    "wrk, the HTTP load generator, is not on PATH.\n"
    "Install it with:  sudo apt-get install -y wrk   (Debian/Ubuntu; as root drop sudo)\n"
    "             or:  brew install wrk              (macOS)\n"
    "or pass its path with --wrk /path/to/wrk.")


class WrkMissing(Exception):
    """No wrk binary; the message says how to install one."""


class WrkFailed(Exception):
    """wrk exited non-zero or printed no BENCH_RESULT line."""


@dataclass(frozen=True)
class LoadResult:
    """What one wrk window measured. Rates per second, latencies in milliseconds.

    Latency percentiles cover every response (2xx or not); ``socket_errors``
    (connect, read, write, timeout) have none.
    """

    duration_s: float
    requests: int
    responses_2xx: int
    responses_other: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    bytes_read: int
    extra: dict = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok_rps(self) -> float:
        return self.responses_2xx / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())

    def to_json(self) -> dict:
        data = asdict(self)
        data["rps"] = round(self.rps, 1)
        data["ok_rps"] = round(self.ok_rps, 1)
        return data


def find_wrk(explicit: str | None) -> str:
    """The wrk binary to use; raises WrkMissing with an install hint."""
    path = shutil.which(explicit or "wrk")
    if path is None:
        raise WrkMissing(INSTALL_HINT)
    return path


def parse_result(stdout: str) -> LoadResult:
    """Parse the ``BENCH_RESULT {json}`` line of ``post_json.lua``'s ``done()``."""
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            raw = json.loads(line[len(RESULT_PREFIX):])
            break
    else:
        raise WrkFailed(f"wrk printed no {RESULT_PREFIX.strip()} line:\n{stdout[-2000:]}")
    lat = {k: v / 1000.0 for k, v in raw["latency_us"].items()}
    errors = dict(raw["errors"])
    errors.pop("status", None)  # non-2xx answers are counted by status instead
    return LoadResult(
        duration_s=raw["duration_us"] / 1e6, requests=raw["requests"],
        responses_2xx=raw["responses_2xx"], responses_other=raw["responses_other"],
        statuses=dict(sorted(raw["statuses"].items())), socket_errors=errors,
        p50_ms=lat["p50"], p90_ms=lat["p90"], p99_ms=lat["p99"], p999_ms=lat["p999"],
        mean_ms=lat["mean"], max_ms=lat["max"], bytes_read=raw["bytes"])


FD_HEADROOM = 64  # descriptors wrk needs besides one per connection (epoll, pipes, stdio)


def nofile_limit_for(connections: int) -> tuple[int | None, str | None]:
    """The soft RLIMIT_NOFILE to give a wrk child for ``connections`` (None: the current one
    is enough) and a warning when even the hard limit is too low."""
    needed = connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None, None
    if hard != resource.RLIM_INFINITY and hard < needed:
        return hard, (f"wrk needs about {needed} file descriptors for {connections} connections "
                      f"but the hard limit (ulimit -Hn) is {hard}: expect connect errors")
    return needed, None


class WrkRunner:
    """Runs closed-loop POST load against a URL; ``body_file`` is sent on every request."""

    def __init__(self, binary: str, timeout_s: float = 10.0) -> None:
        self.binary = binary
        self.timeout_s = timeout_s
        self._warned: set[str] = set()

    def argv(self, url: str, body_file: Path, threads: int, connections: int,
             duration_s: float) -> list[str]:
        return [self.binary, f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s",
                f"--timeout={self.timeout_s:g}s", "-s", str(LUA_SCRIPT), url,
                "--", str(body_file)]

    def run(self, url: str, body_file: Path, threads: int, connections: int,
            duration_s: float) -> LoadResult:
        """One wrk window; killed if it overruns by 30 s. Raises WrkFailed."""
        argv = self.argv(url, body_file, threads, connections, duration_s)
        nofile, warning = nofile_limit_for(connections)
        if warning and warning not in self._warned:
            self._warned.add(warning)
            print(f"  warning: {warning}", file=sys.stderr)

        def raise_nofile() -> None:  # in the child, before exec: ulimit -n for wrk alone
            if nofile is not None:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, preexec_fn=raise_nofile if nofile else None)
        try:
            stdout, _ = proc.communicate(timeout=duration_s + 30)
        except subprocess.TimeoutExpired:
            raise WrkFailed(f"wrk overran its {duration_s:g}s window by 30s") from None
        finally:
            if proc.poll() is None:  # interrupted or overran: never leave wrk running
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if proc.returncode != 0:
            raise WrkFailed(f"wrk exited with code {proc.returncode}:\n{stdout[-2000:]}")
        return parse_result(stdout)
