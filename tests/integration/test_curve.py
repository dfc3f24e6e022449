"""CURVE between the daemons: with the switch on, peers with an allowed key work as before
(requests and the job lane), and a worker or gateway without an allowed key cannot join."""
from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cluster import TEST_SERVICES, Cluster, free_port

import zeroserve
from zeroserve.cli.admin import broker_stats
from zeroserve.curve import Curve

pytestmark = pytest.mark.integration


def _env(keys: Path, pair: str, broker: bool = False) -> dict[str, str]:
    env = {"ZEROSERVE_CURVE_ENABLED": "true",
           "ZEROSERVE_CURVE_SECRET_KEY_FILE": str(keys / f"{pair}.key_secret")}
    if broker:
        env["ZEROSERVE_CURVE_ALLOWED_KEYS_DIR"] = str(keys / "allowed")
    else:
        env["ZEROSERVE_CURVE_BROKER_KEY_FILE"] = str(keys / "broker.key")
    return env


def test_only_allowed_keys_join(cluster: Cluster, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    made = subprocess.run([sys.executable, "-m", "zeroserve", "keys", "generate", str(keys),
                           *[f"--name={n}" for n in ("broker", "gateway", "worker", "intruder")]],
                          capture_output=True, text=True, check=True, timeout=30).stdout
    assert f"wrote {keys / 'broker.key_secret'}" in made and "allowed_keys_dir" in made
    (keys / "allowed" / "operator" / "intruder.key").unlink()
    cluster.env["ZEROSERVE_WORKER_JOB_SLOTS"] = "1"
    broker = cluster.broker(env=_env(keys, "broker", broker=True))
    cluster.gateway(env=_env(keys, "gateway"))
    cluster.test_worker("Chores", env=_env(keys, "worker"))
    cluster.wait_ready(1)

    client = zeroserve.Client(cluster.url)
    assert client.call("chores", "ping") == "pong"
    job = client.submit("chores", "double", x=np.ones((1, 4), np.float32))
    np.testing.assert_array_equal(job.result(timeout=20), np.full((1, 4), 2, np.float32))

    intruder = cluster.worker(f"{TEST_SERVICES}:Chores", env=_env(keys, "intruder"))
    plain = cluster.worker(f"{TEST_SERVICES}:Chores")  # no CURVE at all
    time.sleep(2.0)
    operator = Curve(*_pair(keys / "gateway.key_secret"),
                     broker_public=_pair(keys / "broker.key_secret")[0])
    stats = broker_stats(f"tcp://127.0.0.1:{cluster.frontend_port}", curve=operator)
    assert len(stats["workers"]) == 1
    assert intruder.alive() and plain.alive()  # they keep trying; the broker keeps refusing
    assert "refused a CURVE peer" in broker.log()
    with pytest.raises(TimeoutError):  # and a plain operator tool gets no answer either
        broker_stats(f"tcp://127.0.0.1:{cluster.frontend_port}", timeout_s=0.5)

    # its broker link never gets an answer
    assert _readyz(_gateway_with(cluster, keys, "intruder")) == 503
    assert client.call("chores", "ping") == "pong"
    client.close()


def test_a_key_is_refused_on_the_channels_its_role_may_not_use(cluster: Cluster,
                                                                 tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    subprocess.run([sys.executable, "-m", "zeroserve", "keys", "generate", str(keys)],
                   capture_output=True, check=True, timeout=30)
    assert sorted(p.name for p in (keys / "allowed").rglob("*.key")) == \
        ["gateway.key", "worker.key"] and (keys / "allowed" / "worker" / "worker.key").exists()
    broker = cluster.broker(env=_env(keys, "broker", broker=True))
    cluster.gateway(env=_env(keys, "gateway"))
    cluster.test_worker("Chores", env=_env(keys, "worker"))
    cluster.wait_ready(1)
    client = zeroserve.Client(cluster.url)
    assert client.call("chores", "ping") == "pong"

    as_worker = cluster.worker(f"{TEST_SERVICES}:Chores", env=_env(keys, "gateway"))
    # a worker's key makes no control call on the frontend
    assert _readyz(_gateway_with(cluster, keys, "worker")) == 503
    worker_pair = Curve(*_pair(keys / "worker.key_secret"),
                        broker_public=_pair(keys / "broker.key_secret")[0])
    with pytest.raises(TimeoutError):  # nor does an operator tool holding it
        broker_stats(f"tcp://127.0.0.1:{cluster.frontend_port}", timeout_s=0.5,
                     curve=worker_pair)
    assert as_worker.alive()
    gateway_pair = Curve(*_pair(keys / "gateway.key_secret"),
                         broker_public=_pair(keys / "broker.key_secret")[0])
    stats = broker_stats(f"tcp://127.0.0.1:{cluster.frontend_port}", curve=gateway_pair)
    assert len(stats["workers"]) == 1  # the worker holding a gateway's key never joined
    log = broker.log()
    assert "a gateway key may not use the backend" in log
    assert "a worker key may not make control calls on the frontend" in log
    assert client.call("chores", "ping") == "pong"
    client.close()


def _gateway_with(cluster: Cluster, keys: Path, pair: str) -> int:
    """Start a gateway holding the key ``pair`` on a port of its own; its HTTP port."""
    http = free_port()
    cluster._start("gateway", ["gateway", "--frontend", f"tcp://127.0.0.1:{cluster.frontend_port}",
                               "--http-port", str(http), "--grpc-port", "0", "--host", "127.0.0.1"],
                   _env(keys, pair))
    return http


def _readyz(port: int, wait_s: float = 3.0) -> int:
    """The gateway's /readyz status once it listens, after ``wait_s`` for it to settle."""
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                status = 200
        except urllib.error.HTTPError as err:
            status = err.code
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        if wait_s <= 0:
            return status
        time.sleep(wait_s)
        wait_s = 0


def _pair(path: Path) -> tuple[bytes, bytes]:
    import zmq.auth

    public, secret = zmq.auth.load_certificate(str(path))
    assert secret is not None
    return public, secret


def test_bad_curve_settings_stop_the_daemon_with_a_reason(cluster: Cluster) -> None:
    broker = cluster.broker(env={"ZEROSERVE_CURVE_ENABLED": "true"})
    assert broker.proc.wait(20) == 1
    assert "curve.secret_key_file" in broker.log()
    broker.stopped = True


def test_a_worker_key_calls_other_services_but_makes_no_other_control_call(
        cluster: Cluster, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    subprocess.run([sys.executable, "-m", "zeroserve", "keys", "generate", str(keys)],
                   capture_output=True, check=True, timeout=30)
    broker = cluster.broker(env=_env(keys, "broker", broker=True))
    cluster.gateway(env=_env(keys, "gateway"))
    pipeline = Path(__file__).resolve().parent.parent / "pipeline_services.py"
    for cls in ("Tokenize", "Embed", "Rank"):
        cluster.worker(f"{pipeline}:{cls}", "--frontend",
                       f"tcp://127.0.0.1:{cluster.frontend_port}", env=_env(keys, "worker"))
    cluster.wait_ready(3)
    status, body, _ = cluster.post("/rank/score", {"text": "two words"})
    assert (status, body) == (200, 16.0)  # rank called tok and embed with its worker key
    worker_pair = Curve(*_pair(keys / "worker.key_secret"),
                        broker_public=_pair(keys / "broker.key_secret")[0])
    with pytest.raises(TimeoutError):  # the worker key's stats call is dropped unanswered
        broker_stats(f"tcp://127.0.0.1:{cluster.frontend_port}", timeout_s=0.5,
                     curve=worker_pair)
    assert "dropped a stats control call made with a worker key" in broker.log()
