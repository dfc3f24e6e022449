"""``zeroserve serve``: a broker, a gateway and each service's workers on this host, one
process each (:mod:`zeroserve.cli.serve_plan` says which, with what).

The supervisor names a fresh cluster for the run (``serve-<random>``, unless
``cluster.name`` is set), starts the daemons of that cluster, waits until the
gateway *it started* is ready (``/readyz`` names its cluster: another cluster's
gateway may answer on a shared port) and a worker of every service has
registered, and on SIGINT/SIGTERM stops them in order: workers first (they
drain), then the gateway, then the broker. Children get SIGTERM if the
supervisor dies. A broker or gateway that exits before the cluster is ready
(a port taken, most likely) is a start-up error: ``serve`` stops the rest and
exits 1. Later, a daemon that exits on its own is started
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
import time
import urllib.error
import urllib.request
from typing import Any

from zeroserve.cli.restarts import RestartPolicy
from zeroserve.cli.serve_plan import Daemon, daemons
from zeroserve.config import GatewaySettings, Settings
from zeroserve.deployment import Deployment
from zeroserve.process import StopSignals, signal_on_parent_death

log = logging.getLogger("zeroserve.serve")

_READY_TIMEOUT_S = 120.0


def _signal_term_on_parent_death() -> None:  # runs in the child before exec
    signal_on_parent_death(signal.SIGTERM)


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


def child_env(options: dict[str, Any]) -> dict[str, str]:
    """This process's environment with ``options`` (``section__key`` or ``section.key``) as
    ZEROSERVE_* variables; a value that is not a string is written as JSON (YAML reads it)."""
    env = dict(os.environ)
    for name, value in options.items():
        if value is not None:
            text = value if isinstance(value, str) else json.dumps(value)
            env["ZEROSERVE_" + name.replace("__", "_").replace(".", "_").upper()] = text
    return env


def cluster_name(settings: Settings) -> str:
    """The cluster of one ``serve`` run: ``cluster.name`` where it is set, else a fresh one, so
    that two runs on one host never take each other's workers or gateways."""
    if settings.cluster.name != "default":
        return settings.cluster.name
    return f"serve-{os.urandom(4).hex()}"


def serve(deployment: Deployment, settings: Settings, config_file: str | None,
          options: dict[str, Any], gpus: dict[str, tuple[str, ...]] | None = None) -> int:
    """Run the embedded cluster of ``deployment`` (its services named) until a signal; return
    the exit code. ``options`` are the command's flags (``section__key``) and the
    deployment's settings, passed on to every daemon as ZEROSERVE_* variables with the run's
    cluster name; ``gpus`` are each worker's devices (None: no worker's environment is
    touched). The broker binds ``broker.frontend`` and ``broker.backend``, the others
    connect there."""
    cluster = cluster_name(settings)
    port = settings.gateway.http_port
    env = child_env({**options, "cluster__name": cluster})
    plan = daemons(deployment, settings.broker.frontend, settings.broker.backend, config_file,
                   env, gpus)
    served = ", ".join(f"{s.name} ({s.workers} worker(s))" for s in deployment.services)
    expected = {s.name for s in deployment.services if s.workers > 0}
    stop = StopSignals()
    daemon_of = {d.name: d for d in plan}
    procs = {d.name: _start(d) for d in plan}
    log.info("serve: started broker, gateway and %d workers of cluster '%s' (pids %s)",
             len(plan) - 2, cluster, " ".join(str(p.pid) for p in procs.values()))
    for d in plan:
        if d.is_worker and gpus is not None:
            log.info("serve: %s has CUDA_VISIBLE_DEVICES=%r", d.name,
                     d.env["CUDA_VISIBLE_DEVICES"])
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
                procs[name] = _start(daemon_of[name])
                log.info("serve: restarted %s (pid %d)", name, procs[name].pid)
        if stop.received:
            break
        if not ready:
            ready = _is_ready(opener, url, cluster, expected)
            if ready:
                log.info("serve: ready, serving %s at %s://localhost:%d, cluster '%s' "
                         "(Ctrl-C stops)", served, "https" if tls else "http", port, cluster)
            elif time.monotonic() > ready_by:
                log.error("serve: not ready after %.0fs; see the logs above", _READY_TIMEOUT_S)
                code = 1
                break
        time.sleep(0.2)
    _stop_all(list(procs.items()), settings.worker.drain_timeout_s)
    return code


def _start(daemon: Daemon) -> subprocess.Popen:
    return subprocess.Popen(daemon.argv, env=daemon.env,
                            preexec_fn=_signal_term_on_parent_death)


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


def _is_ready(opener: urllib.request.OpenerDirector, url: str, cluster: str,
              services: set[str]) -> bool:
    """Whether the gateway at ``url`` is ready, is of ``cluster`` (the one serve started, not
    another cluster's on the same port) and has a worker of every one of ``services``."""
    try:
        with opener.open(url, timeout=1.0) as resp:
            answer = json.loads(resp.read())
            serving = {name for name, count in answer.get("services", {}).items() if count}
            return resp.status == 200 and answer.get("cluster") == cluster and \
                services <= serving
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return False


def _stop_all(procs: list[tuple[str, subprocess.Popen]], drain_s: float) -> None:
    workers = [p for n, p in procs if n.startswith("worker-")]
    others = [p for n, p in procs if not n.startswith("worker-")]
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
