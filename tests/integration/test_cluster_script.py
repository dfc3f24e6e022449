"""scripts/cluster and scripts/autoscale with real daemons: up, scale under load with no
failed request, status, down, and the autoscaler adding and removing a worker."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cluster import FAST_ENV, ROOT, TEST_SERVICES, free_port
from steady_load import SteadyLoad

import zeroserve

pytestmark = pytest.mark.integration

SCRIPTS = ROOT / "scripts"
ROW = np.zeros((1, 64), np.float32)


class ScriptFleet:
    """Runs scripts/cluster on its own run directory and ports; ``down`` at the end."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.http = free_port()
        self.env = {**os.environ, **FAST_ENV}

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        done = subprocess.run([sys.executable, str(SCRIPTS / "cluster"), "--run-dir",
                               str(self.run_dir), *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    def up(self, service: str, *args: str) -> str:
        return self.run("up", service, "--http-port", str(self.http), "--grpc-port",
                        str(free_port()), "--frontend-port", str(free_port()),
                        "--backend-port", str(free_port()), "--metrics-port", str(free_port()),
                        *args)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def workers(self) -> int:
        """Workers whose pidfile is there (scripts/cluster removes it once one has left)."""
        return len(list(self.run_dir.glob("worker-*.pid")))


@pytest.fixture
def fleet(tmp_path: Path):
    f = ScriptFleet(tmp_path / "run")
    try:
        yield f
    finally:
        f.run("down", check=False)


def test_up_scale_1_4_1_under_load_status_and_down(fleet: ScriptFleet) -> None:
    out = fleet.up(f"{ROOT / 'examples' / 'mlp.py'}:MLP", "--workers", "1", "--gateways", "2")
    assert "ready:" in out
    again = fleet.run("up", "examples/mlp.py:MLP", check=False)
    assert "already running" in again
    load = SteadyLoad([fleet.url], "mlp", "predict", threads=4, inputs={"x": ROW}).start()
    time.sleep(1.0)
    fleet.run("scale", "workers", "4")
    with zeroserve.Client(fleet.url) as client:
        assert client.health()["services"] == {"mlp": 4}
    time.sleep(1.0)
    fleet.run("scale", "workers", "1")
    time.sleep(1.0)
    tally = load.stop()
    print("\n" + tally.line("scale 1 -> 4 -> 1"))
    assert tally.succeeded > 100 and sum(tally.failed.values()) == 0 and tally.hung == 0
    status = fleet.run("status")
    assert "gateway-2" in status and "worker-1" in status and "worker-2" not in status
    assert "stopped" in fleet.run("down")
    assert "nothing is running" in fleet.run("down")
    assert "not running" in fleet.run("scale", "workers", "2", check=False)


def test_autoscaler_adds_a_worker_under_a_queue_and_removes_it_when_idle(
        fleet: ScriptFleet) -> None:
    fleet.up(f"{TEST_SERVICES}:Probe", "--workers", "1")
    scaler = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "autoscale"), "--run-dir", str(fleet.run_dir),
         "--min", "1", "--max", "2", "--interval", "0.2", "--cooldown", "1", "--idle", "1.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=fleet.env)
    try:
        load = SteadyLoad([fleet.url], "probe", "sleep", threads=8,
                          inputs={"seconds": 0.2}).start()
        deadline = time.monotonic() + 20
        while fleet.workers() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fleet.workers() == 2
        tally = load.stop()
        assert sum(tally.failed.values()) == 0
        deadline = time.monotonic() + 20
        while fleet.workers() > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fleet.workers() == 1
    finally:
        scaler.terminate()
        log, _ = scaler.communicate(timeout=10)
    assert "1 -> 2 workers" in log and "2 -> 1 workers" in log, log
