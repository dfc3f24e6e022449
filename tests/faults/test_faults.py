"""Fault injection under a steady load: kill -9 a worker, a gateway and the broker, stop a
worker past its liveness, and cut a worker off the network. No call may hang (get no answer
from a gateway by its deadline + 1 s: the SDK's own timeout, no gateway reachable until the
deadline) and every acknowledged job must succeed; calls may fail, but only with an error
answer that a gateway sent (``steady_load.classify``).

Run with ``-s`` to see the tally of each fault (docs/reliability.md quotes them).
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from cluster import EXAMPLES, TEST_SERVICES, Cluster, Daemon, free_port
from steady_load import SteadyLoad, Tally

import zeroserve

pytestmark = pytest.mark.integration

JOBS = 40
JOB_ENV = {"ZEROSERVE_JOBS_LEASE_S": "2", "ZEROSERVE_JOBS_RETRY_BACKOFF_S": "0.2",
           "ZEROSERVE_JOBS_RETRY_BACKOFF_MAX_S": "1", "ZEROSERVE_WORKER_JOB_SLOTS": "1"}
SERVICE = f"{TEST_SERVICES}:Chores"
assert EXAMPLES  # (the load uses the Chores test service: a real-time ping and tasks)


def _start(cluster: Cluster, workers: int = 2) -> list[Daemon]:
    cluster.env.update(JOB_ENV)
    cluster.broker()
    cluster.gateway()
    started = [cluster.worker(SERVICE) for _ in range(workers)]
    cluster.wait_ready(workers)
    return started


def _submit_jobs(url: str, tally: Tally, tag: str) -> list[zeroserve.Job]:
    client = zeroserve.Client(url, timeout=20.0)
    jobs = [client.submit("chores", "mark", idempotency_key=f"{tag}-{i}", tag=f"{tag}{i}",
                          seconds=0.05) for i in range(JOBS)]
    tally.jobs_submitted += len(jobs)
    return jobs


def _finish(load: SteadyLoad, jobs: list[zeroserve.Job], fault: str) -> Tally:
    tally = load.stop()
    for job in jobs:
        deadline = time.monotonic() + 60
        while True:
            try:
                if job.wait(timeout=60)["state"] == "succeeded":
                    tally.jobs_succeeded += 1
                break
            except (zeroserve.Overloaded, zeroserve.DeadlineExceeded):
                assert time.monotonic() < deadline  # the gateway or broker is coming back
                time.sleep(0.2)
    print("\n" + tally.line(fault))
    assert tally.sent == tally.succeeded + tally.failed_total + tally.hung, \
        tally.line(fault)
    assert tally.hung == 0, tally.line(fault)
    assert tally.jobs_succeeded == tally.jobs_submitted, tally.line(fault)
    assert tally.succeeded > 0
    assert not any(k.startswith("unexpected") for k in tally.failed), tally.line(fault)
    return tally


def _run(cluster: Cluster, fault: str, inject, urls: list[str] | None = None) -> Tally:
    load = SteadyLoad(urls or [cluster.url], "chores", "ping").start()
    tally = load.tally
    time.sleep(1.0)
    jobs = _submit_jobs(cluster.url, tally, fault.split()[0])
    inject()
    time.sleep(2.0)
    return _finish(load, jobs, fault)


def test_kill_9_a_worker(cluster: Cluster) -> None:
    victim, _ = _start(cluster)

    def inject() -> None:
        victim.kill()
        time.sleep(1.0)
        cluster.worker(SERVICE)

    _run(cluster, "kill -9 worker", inject)


def test_kill_9_a_gateway(cluster: Cluster) -> None:
    _start(cluster)
    spare_http = free_port()
    spare = cluster.gateway("--http-port", str(spare_http), "--grpc-port", str(free_port()))
    spare_url = f"http://127.0.0.1:{spare_http}"
    first = cluster.daemons[1]

    def inject() -> None:
        first.kill()
        time.sleep(0.5)
        cluster.gateway()  # back on the same port; callers retry until it answers

    _run(cluster, "kill -9 gateway", inject, urls=[cluster.url, spare_url])
    assert spare.alive()


def test_kill_9_the_broker_and_restart_it(cluster: Cluster) -> None:
    _start(cluster)
    broker = cluster.daemons[0]

    def inject() -> None:
        broker.kill()
        time.sleep(0.5)
        cluster.broker()  # the same ports and job store

    _run(cluster, "kill -9 broker", inject)


def test_sigstop_a_worker_past_its_liveness(cluster: Cluster) -> None:
    victim, _ = _start(cluster)

    def inject() -> None:
        victim.signal(signal.SIGSTOP)
        time.sleep(2.0)  # liveness is 0.6 s in the tests
        victim.signal(signal.SIGCONT)

    _run(cluster, "SIGSTOP worker 2s", inject)


def _netns_available() -> str | None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "needs root and iproute2"
    name = f"zsprobe{os.getpid()}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create network namespaces: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


@pytest.mark.skipif(_netns_available() is not None, reason=str(_netns_available()))
def test_cut_a_worker_off_the_network(cluster: Cluster) -> None:
    """One worker runs in a network namespace joined to the host by a veth pair; taking the
    link down cuts it off from the broker, and bringing it up lets it rejoin."""
    ns, host_if, ns_if = f"zs{os.getpid()}", f"zh{os.getpid()}", f"zn{os.getpid()}"
    octet = random.Random(os.getpid()).randrange(1, 250)
    host_ip, ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        ip("netns", "add", ns)
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        ip("netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        cluster.env.update(JOB_ENV)
        cluster.broker("--backend", f"tcp://0.0.0.0:{cluster.backend_port}")
        cluster.gateway()
        cluster.worker(SERVICE)
        env = {**cluster.env, "ZEROSERVE_WORKER_JOB_HOST": ns_ip}
        cut = Daemon("worker", ["ip", "netns", "exec", ns, sys.executable, "-m", "worker",
                                SERVICE, "--backend", f"tcp://{host_ip}:{cluster.backend_port}"],
                     cluster.tmp / "netns-worker.log", env)
        cluster.daemons.append(cut)
        cluster.wait_ready(2)

        def inject() -> None:
            ip("link", "set", host_if, "down")
            time.sleep(2.0)
            ip("link", "set", host_if, "up")

        _run(cluster, "network cut 2s", inject)
    finally:
        cluster.stop()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
