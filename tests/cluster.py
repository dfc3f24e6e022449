"""Start and stop real zeroserve daemons for tests; nothing outlives the test."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TEST_SERVICES = Path(__file__).resolve().parent / "services.py"

# fast liveness so that failure tests finish in seconds
FAST_ENV = {
    "ZEROSERVE_HEARTBEAT_INTERVAL_S": "0.2",
    "ZEROSERVE_HEARTBEAT_LIVENESS": "3",
    "ZEROSERVE_WORKER_RECONNECT_MAX_S": "0.5",
    "ZEROSERVE_GATEWAY_SCHEMA_REFRESH_S": "0.5",
    "ZEROSERVE_LOG_LEVEL": "INFO",
}


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_slice(low: int) -> range:
    """The ports this test process may hand out: its own share of 20000..low, so that two
    pytest-xdist workers never hand out the same port."""
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) % count if worker.isdigit() else 0
    width = (low - 20_000) // count
    return range(20_000 + index * width, 20_000 + (index + 1) * width)


_next_port: list[int] = []


def free_port() -> int:
    """A loopback port that nothing listens on, for a daemon to bind.

    It is drawn below the kernel's ephemeral range: a port that ``bind(0)`` gives comes from
    the range that outgoing connections draw from too, so another test's connection could
    take it in the moment before the daemon binds it (seen under pytest-xdist). Each test
    process walks its own slice of that range in turn, so a port is not handed out twice
    before the daemon that got it has bound it (random draws did that: a cluster's five
    ports, or two xdist workers, now and then drew the same one)."""
    low = _ephemeral_low()
    if low > 20_000 + 1_000:
        ports = _port_slice(low)
        if not _next_port:
            _next_port.append(random.randrange(ports.start, ports.stop))
        for _ in range(len(ports)):
            port = _next_port[0]
            _next_port[0] = port + 1 if port + 1 < ports.stop else ports.start
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One daemon subprocess and its log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.stopped = False  # stopped or killed on purpose by the test
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, cwd=str(ROOT))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; return the exit code."""
        self.stopped = True
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.stopped = True
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


class Cluster:
    """Daemons of one test, on free loopback ports."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.env = {**os.environ, **FAST_ENV, **(env or {})}
        # jobs: the broker's store and the test services' execution log live in the test's folder
        self.job_store = tmp / "jobs.sqlite3"
        self.job_log = tmp / "job-executions.log"
        self.env.setdefault("ZEROSERVE_JOBS_STORE_PATH", str(self.job_store))
        self.env.setdefault("ZS_TEST_JOB_LOG", str(self.job_log))
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.frontend_port = free_port()
        self.backend_port = free_port()
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.daemons: list[Daemon] = []
        self._n = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _start(self, name: str, args: list[str], extra_env: dict | None = None) -> Daemon:
        self._n += 1
        env = {**self.env, **(extra_env or {})}
        daemon = Daemon(name, [sys.executable, "-m", *args],
                        self.tmp / f"{self._n:02d}-{name}.log", env)
        self.daemons.append(daemon)
        return daemon

    def broker(self, *extra: str, env: dict | None = None) -> Daemon:
        return self._start("broker", [
            "broker", "--frontend", f"tcp://127.0.0.1:{self.frontend_port}",
            "--backend", f"tcp://127.0.0.1:{self.backend_port}",
            "--metrics-port", str(self.metrics_port), *extra], env)

    def gateway(self, *extra: str, env: dict | None = None) -> Daemon:
        return self._start("gateway", [
            "gateway", "--frontend", f"tcp://127.0.0.1:{self.frontend_port}",
            "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
            "--host", "127.0.0.1",
            *extra], env)

    def worker(self, service: str = "mlp.py:MLP", *extra: str, env: dict | None = None) -> Daemon:
        target = service if ":" in service and "/" in service else str(EXAMPLES / service)
        return self._start("worker", [
            "worker", target, "--backend", f"tcp://127.0.0.1:{self.backend_port}", *extra], env)

    def test_worker(self, cls: str, *extra: str, env: dict | None = None) -> Daemon:
        return self.worker(f"{TEST_SERVICES}:{cls}", *extra, env=env)

    def start(self, service: str = "mlp.py:MLP", workers: int = 1) -> Cluster:
        self.broker()
        self.gateway()
        for _ in range(workers):
            self.worker(service)
        self.wait_ready(workers)
        return self

    def stop(self) -> None:
        """Stop every daemon: workers first, then gateways, then brokers."""
        order = {"worker": 0, "gateway": 1, "broker": 2}
        for daemon in sorted(self.daemons, key=lambda d: order.get(d.name, 3)):
            daemon.stop(timeout=5.0)

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def post(self, path: str, body: Any, timeout: float = 30.0,
             headers: dict | None = None) -> tuple[int, Any, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST", headers={
            "Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read()), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null"), dict(err.headers)

    def stats(self) -> dict:
        """The broker's statistics, through a control call on the frontend."""
        from zeroserve.cli.admin import broker_stats

        return broker_stats(f"tcp://127.0.0.1:{self.frontend_port}")

    def wait_http(self, timeout: float = 20.0) -> None:
        """Wait until the gateway answers /healthz (whether or not the cluster is ready)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.get("/healthz", timeout=1.0)[0] == 200:
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise TimeoutError("gateway never answered /healthz")

    def wait_ready(self, workers: int = 1, service: str | None = None,
                   timeout: float = 30.0) -> None:
        """Wait until the gateway answers /readyz and ``workers`` workers have registered."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for d in self.daemons:
                if not d.alive() and not d.stopped:
                    raise RuntimeError(f"{d.name} exited with {d.proc.returncode}:\n{d.log()}")
            try:
                status, body = self.get("/readyz", timeout=1.0)
                last = body
                if status == 200:
                    counts = body.get("services", {})
                    total = counts.get(service, 0) if service else sum(counts.values())
                    if total >= workers:
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.1)
        logs = "\n".join(f"--- {d.name}\n{d.log()[-2000:]}" for d in self.daemons)
        raise TimeoutError(f"cluster not ready after {timeout}s (last {last}):\n{logs}")
