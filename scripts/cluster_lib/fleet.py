"""A fleet of zeroserve daemons on this host, kept in a run directory.

The run directory holds ``fleet.json`` (the service and the ports), one pidfile per
daemon (``broker.pid``, ``gateway-1.pid``, ``worker-3.pid``...) and their logs under
``logs/``. Daemons are started detached (their own session), so the fleet outlives
the command that started it; everything else (scale, status, down) reads the
directory. Stopping sends SIGTERM: a worker finishes what it holds before it
leaves, so scaling down fails no request.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
Say = Callable[[str], None]


class FleetError(Exception):
    """Something the operator has to fix; the message says what."""


@dataclass
class FleetSpec:
    """What ``up`` was asked for: the service and where everything listens."""

    service: str
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    frontend_port: int = 5555
    backend_port: int = 5556
    metrics_port: int = 8002

    @property
    def frontend(self) -> str:
        return f"tcp://{self.host}:{self.frontend_port}"

    @property
    def backend(self) -> str:
        return f"tcp://{self.host}:{self.backend_port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this very process is not alive
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


class Fleet:
    """The daemons recorded in one run directory."""

    def __init__(self, run_dir: Path, env: dict[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.env = {**os.environ, **(env or {})}
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)

    # ------------------------------------------------------------ records

    @property
    def spec_file(self) -> Path:
        return self.run_dir / "fleet.json"

    def spec(self) -> FleetSpec:
        if not self.spec_file.exists():
            raise FleetError(f"no fleet in {self.run_dir}: start one with `cluster up SERVICE`")
        return FleetSpec(**json.loads(self.spec_file.read_text()))

    def members(self, kind: str) -> list[tuple[str, int]]:
        """(name, pid) of the live daemons of ``kind``, oldest first; stale pidfiles go."""
        found = []
        for pidfile in self.run_dir.glob(f"{kind}*.pid"):
            pid = int(pidfile.read_text().strip() or 0)
            if pid and _alive(pid):
                found.append((pidfile.stem, pid))
            else:
                pidfile.unlink(missing_ok=True)
        return sorted(found, key=lambda m: (len(m[0]), m[0]))

    # ------------------------------------------------------------ start and stop

    def _start(self, name: str, args: list[str]) -> int:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", *args], stdout=log,
                                    stderr=subprocess.STDOUT, env=self.env, cwd=str(ROOT),
                                    start_new_session=True)
        (self.run_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
        return proc.pid

    def _next_name(self, kind: str) -> str:
        used = {int(p.stem.split("-")[1]) for p in self.run_dir.glob(f"{kind}-*.pid")}
        return f"{kind}-{next(i for i in range(1, len(used) + 2) if i not in used)}"

    def up(self, spec: FleetSpec, gateways: int, workers: int, ready_timeout: float = 60.0,
           say: Say = print) -> None:
        """Start a broker, ``gateways`` gateways sharing the ports, and ``workers`` workers."""
        running = self.members("broker")
        if running:
            raise FleetError(f"a fleet is already running in {self.run_dir} (broker pid "
                             f"{running[0][1]}): use `cluster scale` or `cluster down`")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.spec_file.write_text(json.dumps(asdict(spec), indent=2) + "\n")
        pid = self._start("broker", ["broker", "--frontend", spec.frontend, "--backend",
                                     spec.backend, "--metrics-port", str(spec.metrics_port)])
        say(f"broker     pid {pid}  frontend {spec.frontend}  backend {spec.backend}")
        self.scale("gateway", gateways, say=say, wait=False)
        self.scale("worker", workers, say=say, wait=False)
        self.wait_ready(workers, ready_timeout)
        say(f"ready: {spec.url} (HTTP), {spec.host}:{spec.grpc_port} (gRPC), "
            f"{workers} worker(s) serving {spec.service}")

    def _args(self, kind: str, spec: FleetSpec) -> list[str]:
        if kind == "gateway":
            return ["gateway", "--broker", spec.frontend, "--host", spec.host, "--http",
                    str(spec.http_port), "--grpc", str(spec.grpc_port), "--reuse-port"]
        return ["worker", spec.service, "--broker", spec.backend]

    def scale(self, kind: str, count: int, say: Say = print,
              wait: bool = True, stop_timeout: float = 60.0) -> None:
        """Start or stop ``kind`` daemons until ``count`` run. Stopping drains: the newest
        go first, each finishing what it holds."""
        if kind not in ("gateway", "worker"):
            raise FleetError(f"cannot scale {kind!r}: scale gateways or workers")
        if count < 0:
            raise FleetError("the count must be 0 or more")
        spec = self.spec()
        if not self.members("broker"):
            raise FleetError(f"the fleet's broker in {self.run_dir} is not running: "
                             "`cluster down`, then `cluster up`")
        members = self.members(kind)
        for _ in range(count - len(members)):
            name = self._next_name(kind)
            pid = self._start(name, self._args(kind, spec))
            say(f"{name:<10} pid {pid}  started")
        extra = members[count:] if count < len(members) else []
        for name, pid in reversed(extra):
            self._stop(name, pid, stop_timeout)
            say(f"{name:<10} pid {pid}  stopped (drained)")
        if wait and kind == "worker" and count > len(members):
            self.wait_ready(count, 60.0)

    def _stop(self, name: str, pid: int, timeout: float) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)

    def down(self, say: Say = print) -> bool:
        """Stop everything: workers (drained), then gateways, then the broker. False when
        nothing was running."""
        stopped = False
        for kind in ("worker", "gateway", "broker"):
            for name, pid in reversed(self.members(kind)):
                self._stop(name, pid, 60.0)
                say(f"{name:<10} pid {pid}  stopped")
                stopped = True
        return stopped

    # ------------------------------------------------------------ state

    def readiness(self) -> dict:
        """The gateway's /readyz answer (its body, also when it says 503)."""
        spec = self.spec()
        try:
            with urllib.request.urlopen(spec.url + "/readyz", timeout=2) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return json.loads(err.read() or b"{}")

    def wait_ready(self, workers: int, timeout: float) -> None:
        """Wait until ``workers`` workers have registered with the broker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if sum(self.readiness().get("services", {}).values()) >= workers:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise FleetError(f"fewer than {workers} workers registered within {timeout:.0f}s; "
                         f"see the logs in {self.run_dir / 'logs'}")
