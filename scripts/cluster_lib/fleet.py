"""Start, scale and stop a fleet of zeroserve daemons on this host.

What was started is recorded in a run directory (:mod:`cluster_lib.rundir`), so
that ``scale``, ``status`` and ``down`` work from any later command. Daemons are
the ordinary ``python -m broker|gateway|worker`` commands, started detached (a
session of their own) with their output in the run directory's logs; they
outlive the command that started them. Every daemon is told the fleet's cluster
name (``--cluster``): the broker refuses the workers and gateways of another
cluster. Gateways share the HTTP and gRPC ports (``--reuse-port``: each asks the
port's gateway for its cluster first and refuses another's). Stopping sends
SIGTERM: a worker tells the broker it is draining, receives no new work,
finishes what it holds and exits, so scaling down fails no request.

A fleet of a deployment file (docs/deployment.md) runs each service's workers,
named ``worker-SERVICE-N``, and scales each service on its own. A worker of a
service that asks for GPUs is given its devices (:mod:`zeroserve.cli.gpus`) in
its ``CUDA_VISIBLE_DEVICES``, recorded in the run directory: it keeps them when
the supervisor starts it again, and no other worker is given them meanwhile.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from cluster_lib.rundir import FleetError, FleetSpec, RunDir, is_daemon, is_supervisor
from cluster_lib.worker_plan import devices_for, plan_devices, service_of_worker, worker_plan

ROOT = Path(__file__).resolve().parents[2]
Say = Callable[[str], None]
STOP_TIMEOUT_S = 60.0  # a worker's drain (worker.drain_timeout_s is 30 s) and then some
READY_TIMEOUT_S = 60.0
SUPERVISOR_PIDFILE = "supervisor.pid"


def check_service(target: str) -> None:
    """Raise FleetError when ``target`` is not ``file.py:Class`` / ``module:Class`` or names
    a file that is not there."""
    module, sep, cls = target.rpartition(":")
    if not sep or not module or not cls:
        raise FleetError(f"SERVICE must be path/to/file.py:Class or package.module:Class, "
                         f"not {target!r}")
    if module.endswith(".py") and not Path(module).is_file():
        raise FleetError(f"no such file: {module}")


def port_taken(host: str, port: int) -> bool:
    """Whether something on this host already listens on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemons bind
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class Fleet:
    """The daemons recorded in one run directory; ``env`` is added to the daemons'
    environment (``ZEROSERVE_*`` settings reach them this way)."""

    def __init__(self, run_dir: Path, env: dict[str, str] | None = None) -> None:
        self.dir = RunDir(run_dir)
        self.env = {**os.environ, **(env or {})}
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self._log_offsets: dict[str, int] = {}

    @property
    def run_dir(self) -> Path:
        return self.dir.path

    def spec(self) -> FleetSpec:
        return self.dir.spec()

    def members(self, kind: str) -> list[tuple[str, int]]:
        """(name, pid) of the live daemons of ``kind`` (broker, gateway, worker)."""
        return self.dir.members(kind)

    # ------------------------------------------------------------ start

    def service_members(self, service: str) -> list[tuple[str, int]]:
        """(name, pid) of the live workers of ``service`` ("": every worker)."""
        return [m for m in self.members("worker")
                if not service or service_of_worker(m[0]) == service]

    def _args(self, kind: str, spec: FleetSpec, name: str = "") -> list[str]:
        cluster = ["--cluster", spec.cluster] if spec.cluster else []
        if kind == "broker":
            return ["broker", "--frontend", spec.frontend_bind, "--backend", spec.backend_bind,
                    "--metrics-port", str(spec.metrics_port),
                    "--job-store", str((self.run_dir / "jobs.sqlite3").resolve()), *cluster]
        if kind == "gateway":
            return ["gateway", "--frontend", spec.frontend, "--host", spec.host, "--http-port",
                    str(spec.http_port), "--grpc-port", str(spec.grpc_port), "--reuse-port",
                    *cluster]
        entry = spec.services.get(service_of_worker(name))
        brokers = ["--backend", spec.backend, "--frontend", spec.frontend]  # frontend: depends
        if entry is None:
            return ["worker", spec.service, *brokers, *cluster]
        return ["worker", entry["target"], *brokers, *entry.get("flags", []), *cluster]

    def start_again(self, name: str, spec: FleetSpec) -> tuple[str, int]:
        """Start the daemon ``name`` (one that exited) again, under its name."""
        return self._start(name.split("-")[0], spec, name)

    def _start(self, kind: str, spec: FleetSpec, name: str = "", service: str = "",
               devices: tuple[str, ...] | None = None) -> tuple[str, int]:
        """Start one daemon; a worker of ``service`` ("": the fleet's one service) with
        ``devices`` (None: those recorded for ``name``, else newly assigned)."""
        prefix = f"{kind}-{service}" if service else kind
        name = name or (kind if kind == "broker" else self.dir.next_name(prefix))
        log_path = self.dir.log_path(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        config = ["--config", spec.config] if spec.config else []
        env = {**self.env, **spec.env}
        if kind == "worker" and spec.wants_gpus():
            if devices is None:
                devices = self.dir.devices(name)
            if devices is None:
                held = {other: self.dir.devices(other) or () for other, _ in
                        self.members("worker")}
                devices = devices_for(spec, name, held)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
            self.dir.record_devices(name, devices)
        with open(log_path, "ab") as log:
            self._log_offsets[name] = log.tell()
            proc = subprocess.Popen(
                [sys.executable, "-m", *self._args(kind, spec, name), *config], stdout=log,
                stderr=subprocess.STDOUT, env=env, cwd=str(ROOT), start_new_session=True)
        self.dir.record(name, proc.pid)
        return name, proc.pid

    def up(self, spec: FleetSpec, gateways: int, workers: int,
           ready_timeout: float = READY_TIMEOUT_S, say: Say = print) -> None:
        """Start a broker, ``gateways`` gateways sharing the ports and ``workers`` workers,
        and wait until they serve. Raise FleetError, having started nothing, when a fleet
        runs in this directory already, the service file is missing or a port is taken; and,
        having stopped what it started, when a daemon exits or the workers never register."""
        services = worker_plan(spec, workers)
        running = self.dir.everyone()
        if running:
            names = ", ".join(f"{name} (pid {pid})" for name, pid in running)
            raise FleetError(f"a fleet is already running in {self.run_dir}: {names}; "
                             "use `cluster scale`, `cluster status` or `cluster down`")
        if gateways < 1 or workers < 0:
            raise FleetError("need at least 1 gateway and 0 or more workers")
        for target in [e["target"] for e in spec.services.values()] or [spec.service]:
            check_service(target)
        planned = plan_devices(spec, services)
        taken = [f"{what} port {port}" for what, port in spec.ports().items()
                 if port and port_taken(spec.host, port)]
        if taken:
            raise FleetError(f"already in use on {spec.host}: {', '.join(taken)}; stop what "
                             "holds them or choose other ports (cluster up --help)")
        self.dir.save(spec)
        try:
            name, pid = self._start("broker", spec)
            say(f"{name:<10} pid {pid}  frontend {spec.frontend_bind}  "
                f"backend {spec.backend_bind}")
            started = [(name, pid)]
            started += self._add("gateway", gateways, spec, say)
            for service, devices in zip(services, planned):
                started += self._add("worker", 1, spec, say, service, devices)
            self.wait_ready(self._expected(spec, services), ready_timeout, watch=started)
        except FleetError as exc:
            self.down(say=lambda line: None)
            raise FleetError(f"{exc}\n(`up` stopped what it had started; logs in "
                             f"{self.dir.logs})") from None
        try:
            served = sorted(self.readiness().get("services", {}))
        except (OSError, ValueError):
            served = []
        if len(served) == 1 and not spec.services:
            spec.service_name = served[0]
            self.dir.save(spec)
        what = ", ".join(f"{name} ({services.count(name)})" for name in spec.services) or \
            spec.service_name or "?"
        say(f"ready: {spec.url} (HTTP), {spec.connect_host}:{spec.grpc_port} (gRPC), "
            f"{gateways} gateway(s), {len(services)} worker(s) serving {what} ({spec.service})")

    @staticmethod
    def _expected(spec: FleetSpec, services: list[str]) -> int | dict[str, int]:
        """What ``wait_ready`` waits for: each service's workers, or the count of the one."""
        if not spec.services:
            return len(services)
        return {name: services.count(name) for name in spec.services if services.count(name)}

    def _add(self, kind: str, count: int, spec: FleetSpec, say: Say, service: str = "",
             devices: tuple[str, ...] | None = None) -> list[tuple[str, int]]:
        started = []
        for _ in range(count):
            name, pid = self._start(kind, spec, service=service, devices=devices)
            shown = f"  CUDA_VISIBLE_DEVICES={','.join(self.dir.devices(name) or ())!r}" \
                if kind == "worker" and spec.wants_gpus() else ""
            say(f"{name:<10} pid {pid}  started{shown}")
            started.append((name, pid))
        return started

    # ------------------------------------------------------------ scale

    def scale(self, kind: str, count: int, say: Say = print, wait: bool = True,
              stop_timeout: float = STOP_TIMEOUT_S, service: str = "") -> None:
        """Start or stop ``kind`` daemons (gateway or worker) until ``count`` run; workers of
        ``service`` (needed when the fleet serves several). New workers are waited for (until
        they have registered) when ``wait``; stopping drains, the newest first, all at once,
        each finishing what it holds."""
        if kind not in ("gateway", "worker"):
            raise FleetError(f"cannot scale {kind!r}: scale gateways or workers")
        if count < (1 if kind == "gateway" else 0):
            raise FleetError(f"cannot scale {kind}s to {count}")
        spec = self.spec()
        if not self.members("broker"):
            raise FleetError(f"the fleet's broker in {self.run_dir} is not running: "
                             "`cluster down`, then `cluster up`")
        service = self._service_to_scale(spec, kind, service)
        members = self.service_members(service) if kind == "worker" else self.members(kind)
        of = f" of {service}" if service else ""
        if count == len(members):
            say(f"{count} {kind}(s){of} running already")
            return
        if count > len(members):
            started = self._add(kind, count - len(members), spec, say, service)
            if wait:
                expected: int | dict[str, int] = count if kind == "worker" else 0
                if service:
                    expected = {service: count}
                self.wait_ready(expected, READY_TIMEOUT_S, watch=started)
            return
        self.stop(list(reversed(members[count:])), stop_timeout, say)

    @staticmethod
    def _service_to_scale(spec: FleetSpec, kind: str, service: str) -> str:
        """The deployment service whose workers ``scale`` changes ("": the fleet's one
        service); FleetError for a missing or unknown one."""
        if kind != "worker":
            if service:
                raise FleetError("--service applies to workers, not gateways")
            return ""
        if not spec.services:
            if service and spec.service_name and service != spec.service_name:
                raise FleetError(f"this fleet serves {spec.service_name}, not {service}")
            return ""
        if not service:
            if len(spec.services) == 1:
                return next(iter(spec.services))
            raise FleetError(f"this fleet serves {', '.join(spec.services)}: say which with "
                             "--service NAME")
        if service not in spec.services:
            raise FleetError(f"this fleet serves {', '.join(spec.services)}, not {service}")
        return service

    def stop(self, members: list[tuple[str, int]], timeout: float, say: Say) -> None:
        """SIGTERM ``members`` together; whoever has not exited after ``timeout`` is killed.
        Each is marked stopped first, so that a supervisor leaves it alone."""
        for name, _ in members:
            self.dir.mark_stopped(name)
        for _, pid in members:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for name, pid in members:
            while is_daemon(pid, name.split("-")[0]) and time.monotonic() < deadline:
                time.sleep(0.05)
            how = "stopped"
            if is_daemon(pid, name.split("-")[0]):
                os.kill(pid, signal.SIGKILL)
                how = f"killed (still running {timeout:.0f}s after SIGTERM)"
            self.dir.drop(name)
            say(f"{name:<10} pid {pid}  {how}")

    def start_supervisor(self, say: Say = print) -> int:
        """Start ``cluster supervise`` for this fleet, detached; its pid."""
        log_path = self.dir.log_path("supervisor")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "cluster"), "--run-dir",
                 str(self.run_dir.resolve()), "supervise"],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=str(ROOT),
                start_new_session=True)
        (self.run_dir / SUPERVISOR_PIDFILE).write_text(f"{proc.pid}\n")
        say(f"{'supervisor':<10} pid {proc.pid}  restarts daemons that exit on their own")
        return proc.pid

    def stop_supervisor(self, say: Say = print) -> bool:
        """Stop the fleet's supervisor, if one runs; whether one did."""
        pidfile = self.run_dir / SUPERVISOR_PIDFILE
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return False
        pidfile.unlink(missing_ok=True)
        if not is_supervisor(pid):
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        while is_supervisor(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        say(f"{'supervisor':<10} pid {pid}  stopped")
        return True

    def down(self, say: Say = print) -> bool:
        """Stop everything: workers (drained), then gateways, then the broker; forget the
        spec. False when nothing was running."""
        stopped = self.stop_supervisor(say)
        for kind in ("worker", "gateway", "broker"):
            members = list(reversed(self.members(kind)))
            if members:
                self.stop(members, STOP_TIMEOUT_S, say)
                stopped = True
        self.dir.forget()
        return stopped

    # ------------------------------------------------------------ state

    def readiness(self) -> dict:
        """The gateway's /readyz answer (its body, also when it says 503); OSError when no
        gateway answers."""
        spec = self.spec()
        try:
            with urllib.request.urlopen(spec.url + "/readyz", timeout=2) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return json.loads(err.read() or b"{}")

    def _listening(self, name: str) -> bool:
        """Whether a gateway started by this object has logged that it listens."""
        try:
            with open(self.dir.log_path(name), "rb") as log:
                log.seek(self._log_offsets.get(name, 0))
                return b"gateway: HTTP on" in log.read()
        except FileNotFoundError:
            return False

    def wait_ready(self, workers: int | Mapping[str, int], timeout: float,
                   watch: list[tuple[str, int]] | None = None) -> None:
        """Wait until ``workers`` workers (or, by service, each service's) have registered
        with the broker and every gateway in ``watch`` listens; FleetError, with its log, as
        soon as a daemon in ``watch`` exits."""
        wanted = dict(workers) if isinstance(workers, Mapping) else {}
        total = sum(wanted.values()) if isinstance(workers, Mapping) else workers
        deadline = time.monotonic() + timeout
        watch = watch or []
        while True:
            for name, pid in watch:
                if not is_daemon(pid, name.split("-")[0]):
                    raise FleetError(f"{name} (pid {pid}) exited; the end of its log "
                                     f"({self.dir.log_path(name)}):\n"
                                     f"{self.dir.log_tail(name, self._log_offsets.get(name, 0))}")
            try:
                serving = self.readiness().get("services", {})
            except (OSError, ValueError):
                serving = None
            registered = -1 if serving is None else (
                sum(min(serving.get(s, 0), n) for s, n in wanted.items()) if wanted
                else sum(serving.values()))
            gateways = all(self._listening(n) for n, _ in watch if n.startswith("gateway"))
            if registered >= total and gateways:
                return
            if time.monotonic() > deadline:
                raise FleetError(f"{max(registered, 0)} of {total} workers registered within "
                                 f"{timeout:.0f}s; see the logs in {self.dir.logs}")
            time.sleep(0.2)
