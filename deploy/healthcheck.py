"""The image's HEALTHCHECK: is the zeroserve daemon of this container healthy?

It finds the daemon's command line (the first process running ``zeroserve ROLE``), reads its
settings as the daemon did (the same flags, ``--config`` file and ``ZEROSERVE_*`` variables) and
checks what the role serves:

- ``gateway`` and ``serve``: ``GET /healthz`` on the HTTP port answers 200;
- ``broker``: its frontend accepts a TCP connection;
- ``worker``: nothing to probe (the broker evicts a worker that misses its heartbeats, and the
  container ends when the worker does): healthy while it runs.

Exit 0 when healthy, 1 otherwise, with one line saying why. Kubernetes ignores HEALTHCHECK; the
manifests in deploy/kubernetes use probes instead.
"""
from __future__ import annotations

import socket
import ssl
import sys
import urllib.parse
import urllib.request
from pathlib import Path

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


def settings_of(command: list[str]):  # -> zeroserve.config.Settings
    """The daemon's settings, layered as its command layered them."""
    from zeroserve.cli.main import main
    from zeroserve.config import load_settings

    role = main.commands[command[0]]
    ctx = role.make_context(command[0], command[1:])
    dotted = {name.replace("__", "."): value for name, value in ctx.params.items()
              if "__" in name}
    return load_settings(ctx.params.get("config_file"), dotted)


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
