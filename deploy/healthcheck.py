"""The image's HEALTHCHECK: is the zeroserve daemon of this container healthy?

It finds the daemon's command line (the first process running ``zeroserve ROLE``), reads its
settings as the daemon did (its ``--config`` file, the ``ZEROSERVE_*`` variables and the flags
that name an address or port) and checks what the role serves:

- ``gateway`` and ``serve``: ``GET /healthz`` on the HTTP port answers 200;
- ``broker``: its frontend accepts a TCP connection;
- ``worker``: nothing to probe (the broker evicts a worker that misses its heartbeats, and the
  container ends when the worker does): healthy while it runs.

Exit 0 when healthy, 1 otherwise, with one line saying why. Kubernetes ignores HEALTHCHECK; the
manifests in deploy/kubernetes use probes instead.
"""
from __future__ import annotations

import importlib.util
import socket
import ssl
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

ROLES = ("broker", "gateway", "worker", "serve")


def daemon_command() -> list[str]:
    """The arguments after ``zeroserve`` of the first process that runs a role."""
    pids = sorted(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        for i, arg in enumerate(argv[:-1]):
            if Path(arg).name == "zeroserve" and argv[i + 1] in ROLES:
                return [a for a in argv[i + 1:] if a]
    raise LookupError("no zeroserve broker|gateway|worker|serve process in this container")


# the flags that name what the check asks, and their old spellings (zeroserve/cli/options.py)
FLAGS = {"--config": "config", "--frontend": "broker.frontend", "--http-port": "gateway.http_port",
         "--http": "gateway.http_port", "--host": "gateway.http_host",
         "--tls-cert": "gateway.tls_cert_file"}


def flags_of(command: list[str]) -> dict[str, str]:
    """The values of :data:`FLAGS` in ``command`` (``--flag value`` or ``--flag=value``)."""
    found: dict[str, str] = {}
    for i, arg in enumerate(command):
        name, equals, value = arg.partition("=")
        if name in FLAGS:
            if not equals:
                value = command[i + 1] if i + 1 < len(command) else ""
            found[FLAGS[name]] = value
    return found


def load_config_module() -> ModuleType:
    """zeroserve/config.py on its own: importing the package would import numpy and more, a
    second of CPU on every check."""
    package = importlib.util.find_spec("zeroserve")
    if package is None or not package.submodule_search_locations:
        raise LookupError("zeroserve is not installed in this image")
    path = Path(list(package.submodule_search_locations)[0]) / "config.py"
    spec = importlib.util.spec_from_file_location("zeroserve_config_for_healthcheck", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks its module up
    spec.loader.exec_module(module)
    return module


def settings_of(command: list[str]) -> Any:
    """The daemon's settings (zeroserve.config.Settings), layered as the daemon layers them:
    its --config file, the environment, then the flags the check needs."""
    flags = flags_of(command)
    config_file = flags.pop("config", None)
    if command[0] != "broker":
        flags.pop("broker.frontend", None)  # a gateway's --frontend is the broker's address
    return load_config_module().load_settings(config_file, flags)


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "*", "::") else host


def check(command: list[str]) -> str:
    """What was checked; raises OSError when the daemon does not answer."""
    role, settings = command[0], settings_of(command)
    if role in ("gateway", "serve"):
        gateway = settings.gateway
        scheme = "https" if gateway.tls_cert_file else "http"
        url = f"{scheme}://{_local(gateway.http_host)}:{gateway.http_port}/healthz"
        unverified = None
        if gateway.tls_cert_file:  # checks that it answers, not who it is
            unverified = ssl.create_default_context()
            unverified.check_hostname = False
            unverified.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(url, timeout=2, context=unverified) as reply:
            return f"{role}: {url} answered {reply.status}"
    if role == "broker":
        address = urllib.parse.urlsplit(settings.broker.frontend)
        host, port = _local(address.hostname or ""), address.port or 5555
        with socket.create_connection((host, port), timeout=2):
            return f"broker: frontend {host}:{port} accepts connections"
    return "worker: running (its liveness is the broker's heartbeat)"


def main() -> int:
    try:
        print(check(daemon_command()))
    except Exception as exc:  # anything that stops the check (a bad flag too) is unhealthy
        print(f"unhealthy: {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
