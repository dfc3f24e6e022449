"""Servers under test as subprocesses: free ports, readiness, one smoke request, teardown.

Every server starts in a session of its own (so a terminal's Ctrl-C reaches
only the harness, which then stops it) and with a parent-death signal (so it
does not outlive a harness that is killed outright). :meth:`ServerProcess.stop`
sends SIGTERM, then SIGKILL to the whole process group after a grace, and
sweeps the group for anything the server left behind.
"""
from __future__ import annotations

import http.client
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench_lib.profiles import Cluster, EchoServer, ServerSpec
from zeroserve.process import signal_on_parent_death

ECHO_SCRIPT = Path(__file__).resolve().parent / "echo_server.py"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_GRPC_CALL = """\
import sys, time
try:
    import grpc
except ImportError:
    sys.exit("the gRPC smoke request needs grpcio: python -m pip install grpcio")
address, method, retry_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
message = sys.stdin.buffer.read()
deadline = time.monotonic() + retry_s
with grpc.insecure_channel(address) as channel:
    call = channel.unary_unary(method)  # no serializers: bytes in, bytes out
    while True:
        try:
            sys.stdout.buffer.write(call(message, timeout=5.0))
            break
        except grpc.RpcError as exc:
            if time.monotonic() > deadline:
                sys.exit(f"{exc.code()}: {exc.details()}")
        time.sleep(0.25)
"""


class ServerFailed(Exception):
    """A server exited, never became ready, or answered the smoke request wrongly."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports the kernel reports free (bound to port 0, read back)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _prepare_child() -> None:
    """Runs in the child before exec: unblock the signals the harness may hold (a signal
    mask survives exec) and ask for SIGTERM when the harness dies (Linux only)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal_on_parent_death(signal.SIGTERM)


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 timeout_s: float = 5.0,
                 headers: tuple[tuple[str, str], ...] | None = None) -> tuple[int, bytes]:
    """One request to 127.0.0.1:``port`` (no proxy); return (status, body). A body goes as
    JSON unless ``headers`` say otherwise. Raises OSError."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        sent = ({"Content-Type": "application/json"} if body is not None else {}) | dict(
            headers or ())
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class ServerProcess:
    """One server under test, listening on ``http_port`` (and gRPC on ``grpc_port``, when it
    serves gRPC); its output goes to ``log_path``."""

    def __init__(self, spec: ServerSpec, argv: list[str], http_port: int, log_path: Path,
                 cwd: Path, env: dict[str, str], stop_grace_s: float,
                 control_address: str | None = None, grpc_port: int | None = None) -> None:
        self.spec = spec
        self.control_address = control_address  # the broker's frontend, for STATS
        self.argv = argv
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.log_path = log_path
        self.stop_grace_s = stop_grace_s
        self._log = open(log_path, "wb")
        self._log.write(("$ " + shlex.join(argv) + "\n").encode())
        self._log.flush()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd,
                                     env=env, start_new_session=True,
                                     preexec_fn=_prepare_child)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_ready(self, timeout_s: float, progress: Progress) -> float:
        """Poll ``GET /readyz`` until 200; return seconds taken. Raises ServerFailed."""
        start = time.monotonic()
        while True:
            waited = time.monotonic() - start
            if not self.alive():
                raise ServerFailed(f"{self.spec.label} exited with code {self.proc.returncode} "
                                   f"before it was ready; last lines of {self.log_path}:\n"
                                   f"{self.log_tail()}")
            try:
                status, _ = http_request(self.http_port, "GET", "/readyz", timeout_s=1.0)
                if status == 200:
                    return waited
            except OSError:
                pass
            if waited > timeout_s:
                raise ServerFailed(f"{self.spec.label} not ready after {timeout_s:.0f}s; "
                                   f"last lines of {self.log_path}:\n{self.log_tail()}")
            progress.tick(waited)
            time.sleep(0.2)

    def smoke(self, route: str, body: bytes, retry_s: float = 10.0,
              headers: tuple[tuple[str, str], ...] | None = None) -> bytes:
        """POST ``body`` to ``route`` until a 200 (retrying ``retry_s``); return the answer."""
        deadline = time.monotonic() + retry_s
        while True:
            try:
                status, answer = http_request(self.http_port, "POST", route, body,
                                              headers=headers)
            except OSError as exc:
                status, answer = 0, str(exc).encode()
            if status == 200:
                return answer
            if time.monotonic() > deadline or not self.alive():
                raise ServerFailed(f"{self.spec.label}: POST {route} answered {status}: "
                                   f"{answer[:300]!r}")
            time.sleep(0.25)

    def smoke_grpc(self, method: str, message: bytes, retry_s: float = 10.0) -> bytes:
        """Call gRPC ``method`` (``/package.Service/Method``) with the serialized ``message``
        until it answers OK (retrying ``retry_s``); return the serialized answer. The call
        runs in a subprocess of this interpreter with grpcio (zeroserve's own dependency), so
        that no gRPC threads live on in the harness. Raises ServerFailed."""
        if self.grpc_port is None:
            raise ServerFailed(f"{self.spec.label} serves no gRPC")
        argv = [sys.executable, "-c", _GRPC_CALL, f"127.0.0.1:{self.grpc_port}", method,
                str(retry_s)]
        try:
            done = subprocess.run(argv, input=message, capture_output=True,
                                  timeout=retry_s + 15, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServerFailed(f"{self.spec.label}: gRPC {method}: {exc}") from None
        if done.returncode != 0:
            last = (done.stderr.decode(errors="replace").strip().splitlines()
                    or ["no output"])[-1]
            raise ServerFailed(f"{self.spec.label}: gRPC {method} failed: {last}")
        return done.stdout

    def cpu_seconds(self) -> float | None:
        """CPU (user + system) used so far by the live processes of the server's group, all
        threads; None where /proc cannot tell (not Linux)."""
        by_daemon = self.cpu_seconds_by_daemon()
        return None if by_daemon is None else sum(by_daemon.values())

    def cpu_seconds_by_daemon(self) -> dict[str, float] | None:
        """:meth:`cpu_seconds` per daemon of the group: ``broker``, ``gateway``, ``worker``
        (every worker together) and ``other`` (``zeroserve serve`` itself, an echo server)."""
        if not Path("/proc").is_dir():
            return None
        totals: dict[str, float] = {}
        for pid in _live_group_members(self.proc.pid):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            used = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime (14, 15)
            daemon = _daemon_of(argv)
            totals[daemon] = totals.get(daemon, 0.0) + used
        return totals

    def stop(self) -> StopReport:
        """Stop the server and everything in its process group; say how it went."""
        pgid = self.proc.pid  # start_new_session: the server leads its own group
        start = time.monotonic()
        killed = False
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_grace_s)
            except subprocess.TimeoutExpired:
                killed = True
                _signal_group(pgid, signal.SIGKILL)
                self.proc.wait()
        left = _sweep_group(pgid)
        self._log.close()
        return StopReport(self.proc.returncode, time.monotonic() - start, killed, left)


@dataclass(frozen=True)
class StopReport:
    """How a server stopped: its exit code, after how long, whether it needed SIGKILL
    (``killed``), and the pids of its process group still alive after the sweep."""

    exit_code: int | None
    seconds: float
    killed: bool
    left: list[int]

    def describe(self) -> str:
        how = (f"killed after the {self.seconds:.1f}s grace" if self.killed
               else f"exit code {self.exit_code}, {self.seconds:.1f}s")
        if self.left:
            how += f"; pids {self.left} still alive after SIGKILL"
        return how


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


_DAEMONS = {b"broker", b"gateway", b"worker"}


def _daemon_of(argv: list[bytes]) -> str:
    """Which daemon a ``python -m broker|gateway|worker ...`` command line runs."""
    if len(argv) > 2 and argv[1] == b"-m" and argv[2] in _DAEMONS:
        return argv[2].decode()
    return "other"


def _live_group_members(pgid: int) -> list[int]:
    """Pids of live (not zombie) processes in group ``pgid``; Linux /proc, else a kill probe."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces, so split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _sweep_group(pgid: int, grace_s: float = 3.0) -> list[int]:
    """SIGTERM, then SIGKILL, whatever is still alive in ``pgid``; return pids that survived."""
    if not _live_group_members(pgid):
        return []
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _live_group_members(pgid):
            return []
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)
    time.sleep(0.2)
    return _live_group_members(pgid)


class Progress:
    """A one-line progress indicator on stderr: ``starting X on :port ... 3s``."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._shown = -1
        sys.stderr.write(f"  {what} ...")
        sys.stderr.flush()

    def tick(self, waited_s: float) -> None:
        if int(waited_s) > self._shown:
            self._shown = int(waited_s)
            if self._shown > 0:
                sys.stderr.write(f" {self._shown}s")
                sys.stderr.flush()

    def end(self, message: str) -> None:
        sys.stderr.write(f" {message}\n")
        sys.stderr.flush()


def start_server(spec: ServerSpec, *, repo: Path, work_dir: Path, answer_file: Path,
                 zeroserve_cmd: list[str], index: int,
                 grpc_answer_file: Path | None = None) -> ServerProcess:
    """Start ``spec`` on free loopback ports; its log goes to ``work_dir/logs``. An echo
    answers ``answer_file`` to every POST and, with gRPC, ``grpc_answer_file`` to every
    ModelInfer call."""
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if isinstance(spec, EchoServer):
        port, grpc_port = free_ports(2)
        argv = [sys.executable, str(ECHO_SCRIPT), "--port", str(port),
                "--body-file", str(answer_file)]
        if spec.grpc:
            if grpc_answer_file is None:
                raise ValueError("a gRPC echo needs grpc_answer_file")
            argv += ["--grpc-port", str(grpc_port), "--grpc-body-file", str(grpc_answer_file)]
        if spec.sleep_s:
            argv += ["--sleep-s", str(spec.sleep_s)]
        log_path = logs / f"{index:02d}-echo-{spec.model}.log"
        return ServerProcess(spec, argv, port, log_path, repo, env, stop_grace_s=5.0,
                             grpc_port=grpc_port if spec.grpc else None)
    if isinstance(spec, Cluster):
        port, frontend, backend, grpc_port, metrics_port = free_ports(5)
        argv = zeroserve_cmd + [
            spec.service, "--workers", str(spec.workers), "--http-port", str(port),
            "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
            "--host", "127.0.0.1",
            "--frontend", f"tcp://127.0.0.1:{frontend}",
            "--backend", f"tcp://127.0.0.1:{backend}",
            *spec.serve_args]
        env.update(dict(spec.env))
        name = spec.service.rsplit(":", 1)[-1].lower()
        log_path = logs / f"{index:02d}-zeroserve-{name}-w{spec.workers}.log"
        return ServerProcess(spec, argv, port, log_path, repo, env, stop_grace_s=20.0,
                             control_address=f"tcp://127.0.0.1:{frontend}",
                             grpc_port=grpc_port)
    raise TypeError(f"unknown server spec {spec!r}")
