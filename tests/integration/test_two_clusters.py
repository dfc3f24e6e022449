"""Two clusters on one host never mix: not through shared HTTP/gRPC ports (SO_REUSEPORT), not
through shared broker ports. Liveness is 0.6 s in these tests (heartbeat 0.2 s x 3)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cluster import EXAMPLES, FAST_ENV, ROOT, Cluster, Daemon, free_port
from reference_models import mlp, sample_input

import zeroserve

pytestmark = pytest.mark.integration


def _named(tmp: Path, name: str) -> Cluster:
    tmp.mkdir(exist_ok=True)
    return Cluster(tmp, env={"ZEROSERVE_CLUSTER_NAME": name})


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what()
        time.sleep(0.1)


def _exit_code(daemon: Daemon, timeout_s: float = 20.0) -> int:
    try:
        return daemon.proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{daemon.name} still runs:\n{daemon.log()}") from None


def _readyz(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# ------------------------------------------------------------------ serve


def _serve(log_path: Path, http: int, grpc: int, front: int, back: int,
           workers: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "zeroserve", "serve", str(EXAMPLES / "mlp.py") + ":MLP",
         "--http-port", str(http), "--grpc-port", str(grpc), "--host", "127.0.0.1",
         "--metrics-port", "0", "--workers", str(workers),
         "--frontend", f"tcp://127.0.0.1:{front}", "--backend", f"tcp://127.0.0.1:{back}"],
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, cwd=str(ROOT),
        env={**os.environ, **FAST_ENV, "ZEROSERVE_JOBS_STORE_PATH": str(log_path) + ".jobs"})


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _second_serve_fails(tmp_path: Path, same_broker_ports: bool) -> None:
    http, grpc, front, back = free_port(), free_port(), free_port(), free_port()
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _serve(first_log, http, grpc, front, back, workers=2)
    second = None
    try:
        _wait_for(lambda: "serve: ready" in first_log.read_text(), 60,
                  lambda: first_log.read_text())
        status, ready = _readyz(f"http://127.0.0.1:{http}")
        assert status == 200 and ready["cluster"].startswith("serve-")
        started = time.monotonic()
        second = _serve(second_log, http, grpc, *((front, back) if same_broker_ports
                                                  else (free_port(), free_port())))
        code = second.wait(60)
        took = time.monotonic() - started
        text = second_log.read_text()
        print(f"second serve exited {code} after {took:.1f}s")
        assert code == 1 and "serve: ready" not in text
        assert "before the cluster was ready" in text
        if same_broker_ports:
            assert "serve: the broker exited" in text and "cannot bind" in text
        else:
            assert "serve: the gateway exited" in text and f"HTTP port {http}" in text
        x = sample_input(1)
        client = zeroserve.Client(f"http://127.0.0.1:{http}")
        np.testing.assert_allclose(client.call("mlp", "predict", x=x), mlp(x), rtol=1e-5)
        status, after = _readyz(f"http://127.0.0.1:{http}")
        assert status == 200 and after["cluster"] == ready["cluster"]
        assert after["services"] == {"mlp": 2}  # no worker of the second run joined
    finally:
        if second is not None:
            _end(second)
        _end(first)


def test_a_second_serve_on_the_same_http_port_exits_1_and_the_first_keeps_answering(tmp_path):
    _second_serve_fails(tmp_path, same_broker_ports=False)


def test_a_second_serve_on_every_same_port_exits_1_and_none_of_its_workers_joins(tmp_path):
    _second_serve_fails(tmp_path, same_broker_ports=True)


# ------------------------------------------------------------------ shared HTTP/gRPC ports


def test_a_sharing_gateway_refuses_another_clusters_port_and_joins_its_own(tmp_path):
    a, b = _named(tmp_path / "a", "a"), _named(tmp_path / "b", "b")
    for port in ("http_port", "grpc_port"):
        setattr(b, port, getattr(a, port))
    try:
        a.broker()
        a.gateway("--reuse-port")
        a.worker()
        a.wait_ready(1)
        assert _readyz(a.url)[1]["cluster"] == "a"
        b.broker()
        foreign = b.gateway("--reuse-port")
        assert _exit_code(foreign) == 1
        line = next(x for x in foreign.log().splitlines() if "not sharing" in x)
        print(line)
        assert f"HTTP port {a.http_port}" in line and "'a'" in line and "'b'" in line
        plain = b.gateway()  # reuse_port off: the taken port is a start-up error
        assert _exit_code(plain) == 1
        assert f"HTTP port {a.http_port}" in plain.log() and "cannot listen" in plain.log()
        own = a.gateway("--reuse-port")
        _wait_for(lambda: "gateway: HTTP on" in own.log(), 20, own.log)
        assert own.alive()
        x = sample_input(1)
        client = zeroserve.Client(a.url)
        for _ in range(20):  # whichever of the two gateways takes the connection answers
            np.testing.assert_allclose(client.call("mlp", "predict", x=x), mlp(x), rtol=1e-5)
    finally:
        b.stop()
        a.stop()


# ------------------------------------------------------------------ shared broker ports


def test_a_worker_of_another_cluster_on_the_same_broker_ports_is_refused(tmp_path):
    a, b = _named(tmp_path / "a", "a"), _named(tmp_path / "b", "b")
    b.frontend_port, b.backend_port = a.frontend_port, a.backend_port
    try:
        broker = a.broker()
        a.gateway()
        a.worker()
        a.wait_ready(1)
        assert _exit_code(b.broker()) == 1  # its ports are a's
        foreign = b.test_worker("Probe")
        _wait_for(lambda: "refused it" in foreign.log(), 30, foreign.log)
        refusal = next(x for x in foreign.log().splitlines() if "refused it" in x)
        logged = [x for x in broker.log().splitlines() if "refused worker" in x]
        print(refusal, logged, sep="\n")
        assert "'a'" in refusal and "'b'" in refusal
        assert len(logged) == 1 and logged[0].endswith("of cluster 'b' (this is 'a')")
        time.sleep(1.5)  # a few of its reconnections: still refused, still one broker line
        assert len([x for x in broker.log().splitlines() if "refused worker" in x]) == 1
        assert foreign.alive()
        status, services = a.get("/v1/services")
        assert status == 200 and set(services["services"]) == {"mlp"}
        assert _readyz(a.url)[1]["services"] == {"mlp": 1}
        assert a.get("/v2/models/probe/ready")[0] != 200
        assert [w["service"] for w in a.stats()["workers"]] == ["mlp"]
    finally:
        b.stop()
        a.stop()


def test_a_gateway_of_another_cluster_is_refused_and_never_ready(tmp_path):
    a, b = _named(tmp_path / "a", "a"), _named(tmp_path / "b", "b")
    b.frontend_port = a.frontend_port
    try:
        broker = a.broker()
        a.gateway()
        a.worker()
        a.wait_ready(1)
        foreign = b.gateway()
        b.wait_http()
        _wait_for(lambda: "refused this gateway" in foreign.log(), 20, foreign.log)
        status, ready = _readyz(b.url)
        print(ready)
        assert status == 503 and ready["cluster"] == "b" and "'a'" in ready["reason"]
        assert b.post("/mlp/predict", {"x": sample_input(1).tolist()}, timeout=30)[0] != 200
        grpc = zeroserve.Client(f"grpc://127.0.0.1:{b.grpc_port}", timeout=5.0)
        with pytest.raises(zeroserve.ZeroserveError):
            grpc.call("mlp", "predict", x=sample_input(1))
        grpc.close()
        assert b.get("/v2/health/ready")[0] != 200
        time.sleep(1.0)  # more pings, all refused: one line each side
        assert foreign.log().count("refused this gateway") == 1
        assert broker.log().count("refused control calls of cluster 'b' (this is 'a')") == 1
        assert _readyz(a.url)[0] == 200  # a's own gateway is not disturbed
    finally:
        b.stop()
        a.stop()


# ------------------------------------------------------------------ a service that left


def test_a_service_whose_last_worker_left_is_not_advertised_ready(cluster):
    cluster.broker()
    cluster.gateway()
    cluster.worker()
    probe = cluster.test_worker("Probe")
    cluster.wait_ready(1, service="probe")
    cluster.wait_ready(1, service="mlp")
    assert cluster.get("/v2/models/probe/ready")[0] == 200
    assert probe.stop() == 0  # drains and leaves
    _wait_for(lambda: cluster.get("/readyz")[1]["services"].get("probe") == 0, 10,
              lambda: str(cluster.get("/readyz")))
    time.sleep(1.0)  # past a schema refresh (0.5 s here)
    assert cluster.get("/v2/models/probe/ready")[0] != 200
    status, index = cluster.post("/v2/repository/index", {"ready": True})[:2]
    assert status == 200 and "probe" not in [m["name"] for m in index]
    assert cluster.get("/readyz")[0] == 200  # mlp still serves
