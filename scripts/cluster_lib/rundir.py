"""The run directory of a fleet: what was started, with which ports, and where it logs.

Layout::

    RUN_DIR/fleet.json         the service(s), the bind host and the ports (a FleetSpec)
    RUN_DIR/broker.pid         one pidfile per daemon: broker, gateway-N, worker-N (one
                               service) or worker-SERVICE-N (a deployment file's services)
    RUN_DIR/NAME.devices       the GPUs a worker was given (its CUDA_VISIBLE_DEVICES)
    RUN_DIR/logs/NAME.log      each daemon's stdout and stderr
    RUN_DIR/jobs.sqlite3       the broker's job store

A pidfile whose process is gone, or whose pid now belongs to another program,
is stale: :meth:`RunDir.members` removes it.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

KINDS = ("broker", "gateway", "worker")


class FleetError(Exception):
    """Something the operator has to fix; the message says what."""


@dataclass
class FleetSpec:
    """What ``up`` was asked for: the service and where everything listens.

    ``service`` is the worker's target (``path/file.py:Class``); ``service_name`` is
    the name the broker knows it by (``@zeroserve.service(name=...)``), learnt once
    the workers have registered ("" until then). ``cluster`` is the fleet's cluster name,
    given to every daemon ("": the daemons' own ``cluster.name``, for a spec recorded
    before fleets were named).

    A fleet of a deployment file has its path in ``deployment`` (and in ``service``), and
    ``services``: each service's ``target``, worker ``flags``, ``gpus`` per worker and the
    ``workers`` it started with, by name. ``gpus`` lists the devices its workers may be
    given; ``env`` holds the deployment's settings as ``ZEROSERVE_*`` variables for every
    daemon."""

    service: str
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    frontend_port: int = 5555
    backend_port: int = 5556
    metrics_port: int = 8002
    config: str = ""
    service_name: str = ""
    cluster: str = ""
    deployment: str = ""
    services: dict[str, dict] = field(default_factory=dict)
    gpus: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def wants_gpus(self) -> bool:
        """Whether a service of this fleet asks for GPUs (then every worker's
        CUDA_VISIBLE_DEVICES is set: empty for those that ask for none)."""
        return any(s.get("gpus", 0) > 0 for s in self.services.values())

    @property
    def connect_host(self) -> str:
        """Where local clients reach what binds on ``host`` (a wildcard means loopback)."""
        return {"0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "": "127.0.0.1",
                "::": "::1"}.get(self.host, self.host)

    def _tcp(self, host: str, port: int) -> str:
        return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"

    @property
    def frontend_bind(self) -> str:
        return self._tcp(self.host, self.frontend_port)

    @property
    def backend_bind(self) -> str:
        return self._tcp(self.host, self.backend_port)

    @property
    def frontend(self) -> str:
        """The broker's frontend as gateways and `zeroserve status` connect to it."""
        return self._tcp(self.connect_host, self.frontend_port)

    @property
    def backend(self) -> str:
        """The broker's backend as workers connect to it."""
        return self._tcp(self.connect_host, self.backend_port)

    @property
    def url(self) -> str:
        host = f"[{self.connect_host}]" if ":" in self.connect_host else self.connect_host
        return f"http://{host}:{self.http_port}"

    def ports(self) -> dict[str, int]:
        """Every port the fleet binds, by what it is for (0: not bound)."""
        return {"HTTP": self.http_port, "gRPC": self.grpc_port,
                "broker frontend": self.frontend_port, "broker backend": self.backend_port,
                "broker metrics": self.metrics_port}


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


def is_daemon(pid: int, kind: str) -> bool:
    """Whether ``pid`` runs and is a ``python -m KIND`` daemon (where /proc tells; elsewhere,
    whether it runs)."""
    if not _alive(pid):
        return False
    if not Path("/proc/self").exists():
        return True  # no /proc (macOS): trust the pid
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False  # gone meanwhile
    if argv == [b""]:
        return True  # just started, still inside exec: not yet readable
    return kind.encode() in argv and b"-m" in argv


def is_supervisor(pid: int) -> bool:
    """Whether ``pid`` runs ``cluster supervise`` (where /proc tells; elsewhere, whether it
    runs)."""
    if not _alive(pid):
        return False
    try:
        return b"supervise" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return not Path("/proc/self").exists()


class RunDir:
    """The records of one fleet in ``path`` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def spec_file(self) -> Path:
        return self.path / "fleet.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def spec(self) -> FleetSpec:
        """The recorded spec; FleetError when there is none."""
        if not self.spec_file.exists():
            raise FleetError(f"no fleet in {self.path}: start one with `cluster up SERVICE`")
        known = {f.name for f in fields(FleetSpec)}
        data = json.loads(self.spec_file.read_text())
        return FleetSpec(**{k: v for k, v in data.items() if k in known})

    def save(self, spec: FleetSpec) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.spec_file.write_text(json.dumps(asdict(spec), indent=2) + "\n")

    def forget(self) -> None:
        """Remove the spec (the logs stay)."""
        self.spec_file.unlink(missing_ok=True)

    def members(self, kind: str) -> list[tuple[str, int]]:
        """(name, pid) of the live daemons of ``kind``, oldest name first; stale pidfiles go."""
        found = []
        for pidfile in self.path.glob(f"{kind}*.pid"):
            try:
                pid = int(pidfile.read_text().strip() or 0)
            except ValueError:
                pid = 0
            if pid and is_daemon(pid, kind):
                found.append((pidfile.stem, pid))
            else:
                pidfile.unlink(missing_ok=True)
        return sorted(found, key=lambda m: (len(m[0]), m[0]))

    def everyone(self) -> list[tuple[str, int]]:
        """Every live daemon: the broker, then gateways, then workers."""
        return [m for kind in KINDS for m in self.members(kind)]

    def recorded(self, kind: str) -> dict[str, int]:
        """name -> pid of every pidfile of ``kind``, alive or not (nothing is removed)."""
        found = {}
        for pidfile in self.path.glob(f"{kind}*.pid"):
            try:
                found[pidfile.stem] = int(pidfile.read_text().strip() or 0)
            except (ValueError, OSError):
                continue
        return found

    def record(self, name: str, pid: int) -> None:
        (self.path / f"{name}.stopped").unlink(missing_ok=True)
        (self.path / f"{name}.pid").write_text(f"{pid}\n")

    def drop(self, name: str) -> None:
        (self.path / f"{name}.pid").unlink(missing_ok=True)
        (self.path / f"{name}.devices").unlink(missing_ok=True)

    def record_devices(self, name: str, devices: tuple[str, ...]) -> None:
        """Remember the GPUs given to worker ``name`` (it keeps them when started again)."""
        (self.path / f"{name}.devices").write_text(",".join(devices) + "\n")

    def devices(self, name: str) -> tuple[str, ...] | None:
        """The GPUs recorded for worker ``name``, or None when none were."""
        try:
            text = (self.path / f"{name}.devices").read_text().strip()
        except OSError:
            return None
        return tuple(text.split(",")) if text else ()

    def mark_stopped(self, name: str) -> None:
        """Say that ``name`` is stopped on purpose: a supervisor does not start it again."""
        (self.path / f"{name}.stopped").touch()

    def stopped(self, name: str) -> bool:
        return (self.path / f"{name}.stopped").exists()

    def next_name(self, kind: str) -> str:
        """``kind-N`` with the smallest N that no pidfile uses."""
        used = set()
        for pidfile in self.path.glob(f"{kind}-*.pid"):
            number = pidfile.stem.rpartition("-")[2]
            if number.isdigit():
                used.add(int(number))
        return f"{kind}-{next(i for i in range(1, len(used) + 2) if i not in used)}"

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def log_tail(self, name: str, offset: int = 0, lines: int = 12) -> str:
        """The last ``lines`` lines of a daemon's log after byte ``offset``, indented, for an
        error message."""
        try:
            with open(self.log_path(name), "rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            text = ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (empty)"
