"""``zeroserve serve``: a broker, a gateway and N workers on this host, one process each.

The supervisor names a fresh cluster for the run (``serve-<random>``, unless
``cluster.name`` is set), starts the daemons of that cluster, waits until the
gateway *it started* is ready (``/readyz`` names its cluster: another cluster's
gateway may answer on a shared port), and on SIGINT/SIGTERM stops them in
order: workers first (they drain), then the gateway, then the broker. Children
get SIGTERM if the supervisor dies. A broker or gateway that exits before the
cluster is ready (a port taken, most likely) is a start-up error: ``serve``
stops the rest and exits 1. Later, a daemon that exits on its own is started
again after a backoff (:class:`~zeroserve.cli.restarts.RestartPolicy`); one
that crashes five times within a minute makes ``serve`` stop the rest and exit 1.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from zeroserve.cli.restarts import RestartPolicy
from zeroserve.config import GatewaySettings, Settings
from zeroserve.process import StopSignals, signal_on_parent_death

log = logging.getLogger("zeroserve.serve")

_READY_TIMEOUT_S = 120.0


def _signal_term_on_parent_death() -> None:  # runs in the child before exec
    signal_on_parent_death(signal.SIGTERM)


def connect_address(bind: str) -> str:
    """The address to connect to for a bind address (``*`` and 0.0.0.0 become loopback)."""
    return bind.replace("://*:", "://127.0.0.1:").replace("://0.0.0.0:", "://127.0.0.1:")


def readiness_check(gateway: GatewaySettings) -> tuple[str, ssl.SSLContext | None]:
    """The URL of the gateway's ``/readyz`` on loopback, and the TLS context to fetch it with
    when the gateway speaks TLS. That context verifies no certificate: the gateway's names
    the host that clients use, not 127.0.0.1, and this one check goes to our own child. With
    a client CA (mTLS) it presents the gateway's own certificate, which the CA must accept."""
    port = gateway.http_port
    if not gateway.tls_cert_file:
        return f"http://127.0.0.1:{port}/readyz", None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if gateway.tls_client_ca_file:
        context.load_cert_chain(gateway.tls_cert_file, gateway.tls_key_file)
    return f"https://127.0.0.1:{port}/readyz", context


def _child_env(options: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in options.items():
        if value is not None:
            env["ZEROSERVE_" + name.replace("__", "_").upper()] = str(value)
    return env


def cluster_name(settings: Settings) -> str:
    """The cluster of one ``serve`` run: ``cluster.name`` where it is set, else a fresh one, so
    that two runs on one host never take each other's workers or gateways."""
    if settings.cluster.name != "default":
        return settings.cluster.name
    return f"serve-{os.urandom(4).hex()}"


def serve(service: str, workers: int, settings: Settings, config_file: str | None,
          options: dict[str, Any]) -> int:
    """Run the embedded cluster until a signal; return the exit code. ``options`` are the
    command's flags (``section__key``), passed on to every daemon as ZEROSERVE_* variables
    with the run's cluster name; the broker binds ``broker.frontend`` and
    ``broker.backend``, the others connect there."""
    frontend, backend = settings.broker.frontend, settings.broker.backend
    port = settings.gateway.http_port
    cluster = cluster_name(settings)
    base = [sys.executable, "-m"]
    extra = ["--config", config_file] if config_file else []
    env = _child_env({**options, "cluster__name": cluster})
    specs = [("broker", base + ["broker", "--frontend", frontend, "--backend", backend] + extra)]
    specs.append(("gateway", base + ["gateway", "--frontend", connect_address(frontend)]
                  + extra))
    for i in range(workers):
        specs.append((f"worker-{i + 1}", base + ["worker", service, "--backend",
                                                 connect_address(backend), "--frontend",
                                                 connect_address(frontend)] + extra))
    stop = StopSignals()
    argv_of = dict(specs)
    procs = {name: _start(argv, env) for name, argv in specs}
    log.info("serve: started broker, gateway and %d workers of cluster '%s' (pids %s)",
             workers, cluster, " ".join(str(p.pid) for p in procs.values()))
    url, tls = readiness_check(settings.gateway)
    opener = _opener(tls)
    ready_by = time.monotonic() + _READY_TIMEOUT_S
    ready = False
    code = 0
    policy = RestartPolicy()
    restart_at: dict[str, float] = {}  # daemons that exited, waiting out their backoff
    while not stop.received:
        now = time.monotonic()
        for name, proc in procs.items():
            if name in restart_at or proc.poll() is None:
                continue
            if not ready and name in ("broker", "gateway"):
                log.error("serve: the %s exited (code %s) before the cluster was ready (%s "
                          "its log above says why); stopping the rest", name,
                          proc.returncode, _start_up_hint(name, settings))
                code = 1
                stop.received = True
                break
            when = policy.crashed(name, now)
            if when is None:
                log.error("serve: %s exited (code %s), %d crashes within %.0fs; giving up and "
                          "stopping the rest", name, proc.returncode, policy.crashes(name),
                          policy.window_s)
                code = 1
                stop.received = True
                break
            log.warning("serve: %s exited unexpectedly (code %s); restarting it in %.1fs",
                        name, proc.returncode, when - now)
            restart_at[name] = when
        for name, when in list(restart_at.items()):
            if not stop.received and now >= when:
                del restart_at[name]
                procs[name] = _start(argv_of[name], env)
                log.info("serve: restarted %s (pid %d)", name, procs[name].pid)
        if stop.received:
            break
        if not ready:
            ready = _is_ready(opener, url, cluster)
            if ready:
                log.info("serve: ready, serving %s at %s://localhost:%d, cluster '%s' "
                         "(Ctrl-C stops)", service, "https" if tls else "http", port, cluster)
            elif time.monotonic() > ready_by:
                log.error("serve: not ready after %.0fs; see the logs above", _READY_TIMEOUT_S)
                code = 1
                break
        time.sleep(0.2)
    _stop_all(list(procs.items()), settings.worker.drain_timeout_s)
    return code


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, preexec_fn=_signal_term_on_parent_death)


def _start_up_hint(name: str, settings: Settings) -> str:
    if name == "gateway":
        gw = settings.gateway
        return (f"is HTTP port {gw.http_port} or gRPC port {gw.grpc_port} on {gw.http_host} "
                "taken?")
    return f"is {settings.broker.frontend} or {settings.broker.backend} taken?"


def _opener(tls: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    """A URL opener that goes to the gateway directly (no proxy), over TLS with ``tls``."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if tls is not None:
        handlers.append(urllib.request.HTTPSHandler(context=tls))
    return urllib.request.build_opener(*handlers)


def _is_ready(opener: urllib.request.OpenerDirector, url: str, cluster: str) -> bool:
    """Whether the gateway at ``url`` is ready and is of ``cluster`` (the one serve started,
    not another cluster's on the same port)."""
    try:
        with opener.open(url, timeout=1.0) as resp:
            return resp.status == 200 and json.loads(resp.read()).get("cluster") == cluster
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return False


def _stop_all(procs: list[tuple[str, subprocess.Popen]], drain_s: float) -> None:
    workers = [p for n, p in procs if n.startswith("worker")]
    others = [p for n, p in procs if not n.startswith("worker")]
    for group, grace in ((workers, drain_s + 2), (others[1:], 10.0), (others[:1], 10.0)):
        for proc in group:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in group:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    log.info("serve: stopped")
