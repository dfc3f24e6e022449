"""What every load tool shares: the target it loads, the result it gives, and how it is run.

The drivers (:mod:`bench_lib.wrk`, :mod:`bench_lib.h2load`, :mod:`bench_lib.k6`) turn a
:class:`LoadTarget` into a command line and its output into a :class:`LoadResult`;
:func:`run_tool` runs that command for one window and measures the CPU it used, so that a
table can say how much of the machine the load generator took from the server.
"""
from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol as TypingProtocol

from bench_lib.profiles import LoadTool, Protocol


class ToolMissing(Exception):
    """A load tool's binary is not installed; the message says how to install it."""


class LoadFailed(Exception):
    """A load tool exited non-zero, overran its window, or printed no result."""


@dataclass(frozen=True)
class LoadTarget:
    """What one run loads: ``url`` (``http://127.0.0.1:PORT/path``; for gRPC the path is
    ``/inference.GRPCInferenceService/ModelInfer``), with ``body_file`` sent on every request.

    ``headers`` are added to the request (Content-Type included). For gRPC, ``body_file``
    holds the serialized ``ModelInferRequest`` (no gRPC framing), ``json_file`` the same
    request as protobuf JSON (for k6) and ``answer_bytes`` the HTTP/2 data bytes of one
    complete answer (its gRPC frame: 5 + the message), by which a tool that cannot read gRPC
    trailers tells a full answer from an error.
    """

    protocol: Protocol
    url: str
    body_file: Path
    headers: tuple[tuple[str, str], ...] = ()
    json_file: Path | None = None
    answer_bytes: int = 0

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT`` of :attr:`url`."""
        return self.url.split("://", 1)[-1].split("/", 1)[0]

    @property
    def path(self) -> str:
        """The path of :attr:`url`, with its leading ``/``."""
        rest = self.url.split("://", 1)[-1]
        return "/" + rest.split("/", 1)[1] if "/" in rest else "/"


@dataclass(frozen=True)
class LoadResult:
    """What one load window measured. Rates per second, latencies in milliseconds.

    Latency percentiles cover every response (2xx or not); ``socket_errors``
    (connect, read, write, timeout...) have none. For gRPC a response is "2xx" when the
    call ended with status OK. ``tool_cpu_s`` is the CPU (user + system) the load tool used,
    all its threads, over the ``tool_wall_s`` it ran (its start included), when measured.
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
    tool_cpu_s: float | None = None
    tool_wall_s: float | None = None

    def tool_cpu_share(self, cpus: int) -> float | None:
        """Share (0..1) of all ``cpus`` the load tool kept busy while it ran."""
        if self.tool_cpu_s is None or not self.tool_wall_s or cpus <= 0:
            return None
        return self.tool_cpu_s / (self.tool_wall_s * cpus)

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


class LoadRunner(TypingProtocol):
    """A load tool: closed-loop load on ``target`` over ``connections`` for ``duration_s``."""

    tool: LoadTool

    def run(self, target: LoadTarget, threads: int, connections: int,
            duration_s: float) -> LoadResult: ...


FD_HEADROOM = 64  # descriptors a tool needs besides one per connection (epoll, pipes, stdio)


def nofile_limit_for(connections: int, tool: str = "the load tool"
                     ) -> tuple[int | None, str | None]:
    """The soft RLIMIT_NOFILE to give a tool's child for ``connections`` (None: the current
    one is enough) and a warning when even the hard limit is too low."""
    needed = connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None, None
    if hard != resource.RLIM_INFINITY and hard < needed:
        return hard, (f"{tool} needs about {needed} file descriptors for {connections} "
                      f"connections but the hard limit (ulimit -Hn) is {hard}: expect "
                      "connect errors")
    return needed, None


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_warned: set[str] = set()


def run_tool(name: str, argv: list[str], connections: int, duration_s: float,
             env: dict[str, str] | None = None) -> tuple[str, float, float]:
    """Run ``argv`` for one window (killed if it overruns by 30 s); return its output
    (stdout and stderr together), the CPU seconds it used and the seconds it ran.
    Raises LoadFailed.

    The CPU is the growth of this process's waited-for children's rusage across the
    call; the harness waits for no other child meanwhile, so it is the tool's alone.
    """
    nofile, warning = nofile_limit_for(connections, name)
    if warning and warning not in _warned:
        _warned.add(warning)
        print(f"  warning: {warning}", file=sys.stderr)

    def raise_nofile() -> None:  # in the child, before exec: ulimit -n for the tool alone
        if nofile is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    cpu_before = _children_cpu_s()
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, preexec_fn=raise_nofile if nofile else None)
    try:
        stdout, _ = proc.communicate(timeout=duration_s + 30)
    except subprocess.TimeoutExpired:
        raise LoadFailed(f"{name} overran its {duration_s:g}s window by 30s") from None
    finally:
        if proc.poll() is None:  # interrupted or overran: never leave the tool running
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    cpu_s = _children_cpu_s() - cpu_before
    wall_s = time.monotonic() - started
    if proc.returncode != 0:
        raise LoadFailed(f"{name} exited with code {proc.returncode}:\n{stdout[-2000:]}")
    return stdout, cpu_s, wall_s
