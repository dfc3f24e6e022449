"""scripts/cluster with real daemons: up with gateways sharing a port, scale 1 -> 4 -> 1 and
1 -> 8 -> 1 under a steady load with no failed request, status, down, and the errors when
something is already running, missing or cannot start."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cluster import ROOT, TEST_SERVICES
from script_fleet import ScriptFleet
from steady_load import SteadyLoad

import zeroserve

pytestmark = pytest.mark.integration

MLP = f"{ROOT / 'examples' / 'mlp.py'}:MLP"
ROW = np.zeros((1, 64), np.float32)


@pytest.fixture
def fleet(tmp_path: Path):
    f = ScriptFleet(tmp_path / "run")
    try:
        yield f
    finally:
        f.run("down", check=False)


def _wait_workers(url: str, count: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    with zeroserve.Client(url) as client:
        while True:
            seen = client.health()["services"].get("mlp", 0)
            if seen == count or time.monotonic() > deadline:
                return seen
            time.sleep(0.1)


def test_scale_1_4_1_under_load_fails_no_request(fleet: ScriptFleet) -> None:
    out = fleet.up(MLP, "--workers", "1", "--gateways", "2")
    assert "ready:" in out and "2 gateway(s)" in out
    load = SteadyLoad([fleet.url], "mlp", "predict", threads=4, inputs={"x": ROW}).start()
    try:
        time.sleep(1.0)
        fleet.run("scale", "workers", "4")
        assert _wait_workers(fleet.url, 4) == 4
        time.sleep(1.0)
        out = fleet.run("scale", "workers", "1")
        assert out.count("stopped") == 3 and "killed" not in out
        assert _wait_workers(fleet.url, 1) == 1
        time.sleep(1.0)
    finally:
        tally = load.stop()
    print("\n" + tally.line("scripts/cluster scale 1 -> 4 -> 1, 2 gateways"))
    assert tally.succeeded > 100
    assert sum(tally.failed.values()) == 0 and tally.hung == 0, tally.line("scale")
    assert len(fleet.pids("gateway")) == 2 and fleet.workers() == 1


def test_scale_1_8_1_under_load_fails_no_request_and_answers_every_call(
        fleet: ScriptFleet) -> None:
    fleet.up(MLP, "--gateways", "2", "--workers", "1")
    load = SteadyLoad([fleet.url], "mlp", "predict", threads=4, inputs={"x": ROW}).start()
    steps = []
    try:
        time.sleep(1.0)
        for count, stopped in ((8, 0), (1, 7)):
            started, answered = time.monotonic(), load.tally.succeeded
            out = fleet.run("scale", "workers", str(count))
            assert out.count("stopped") == stopped and "killed" not in out, out
            assert _wait_workers(fleet.url, count, timeout=30.0) == count
            took = time.monotonic() - started
            steps.append((fleet.workers(), took, load.tally.succeeded - answered))
            time.sleep(1.0)
    finally:
        tally = load.stop()
    print("\n" + tally.line("scripts/cluster scale 1 -> 8 -> 1, 2 gateways"))
    for workers, took, answered in steps:
        print(f"  -> {workers} worker(s) in {took:.1f}s, {answered} calls answered meanwhile")
    assert tally.succeeded > 100 and all(answered > 0 for _, _, answered in steps)
    assert sum(tally.failed.values()) == 0 and tally.hung == 0, tally.line("scale")
    assert tally.succeeded == tally.sent  # every call sent was answered
    assert fleet.workers() == 1


def test_up_twice_is_refused_status_shows_the_daemons_and_down_is_idempotent(
        fleet: ScriptFleet) -> None:
    fleet.up(MLP, "--workers", "2")
    again = fleet.command("cluster", "up", MLP, *fleet.ports())
    assert again.returncode == 1 and "already running" in again.stderr
    assert fleet.workers() == 2  # nothing started twice
    status = fleet.run("status")
    assert "broker" in status and "gateway-1" in status
    assert status.count("serving, 0/2 slots busy") == 2 and "queue mlp.predict" in status
    cluster = re.search(r"cluster '(fleet-[0-9a-f]+)'", status)
    assert cluster, status  # a fresh name per fleet, given to every daemon
    with urllib.request.urlopen(fleet.url + "/readyz", timeout=5) as resp:
        assert json.loads(resp.read())["cluster"] == cluster.group(1)
    assert fleet.run("scale", "workers", "2").strip() == "2 worker(s) running already"
    down = fleet.run("down")
    assert down.count("stopped") == 4 and not list(fleet.run_dir.glob("*.pid"))
    assert "nothing is running" in fleet.run("down")
    for args in (["status"], ["scale", "workers", "2"]):
        done = fleet.command("cluster", *args)
        assert done.returncode == 1 and "cluster up" in done.stderr, done.stderr


def test_up_refuses_a_taken_port_or_a_missing_service_and_starts_nothing(
        fleet: ScriptFleet) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", fleet.http))
        holder.listen()
        done = fleet.command("cluster", "up", MLP, *fleet.ports())
    assert done.returncode == 1 and f"HTTP port {fleet.http}" in done.stderr, done.stderr
    done = fleet.command("cluster", "up", "examples/nothing.py:Model", *fleet.ports())
    assert done.returncode == 1 and "no such file" in done.stderr
    assert not list(fleet.run_dir.glob("*.pid"))


def test_a_worker_that_cannot_start_fails_up_with_its_log_and_leaves_nothing_running(
        fleet: ScriptFleet) -> None:
    done = fleet.command("cluster", "up", f"{TEST_SERVICES}:Broken", *fleet.ports())
    assert done.returncode == 1
    # whichever worker exits first is the one reported
    assert re.search(r"worker-\d", done.stderr) and "weights.bin" in done.stderr, done.stderr
    assert not list(fleet.run_dir.glob("*.pid"))


def test_a_supervised_fleet_starts_a_killed_worker_again_and_answers_every_call(
        fleet: ScriptFleet) -> None:
    out = fleet.up(MLP, "--workers", "2", "--supervise")
    assert "supervisor" in out
    load = SteadyLoad([fleet.url], "mlp", "predict", threads=4, inputs={"x": ROW}).start()
    try:
        time.sleep(1.0)
        victim = fleet.pids("worker")[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while victim in fleet.pids("worker") or fleet.workers() < 2:
            assert time.monotonic() < deadline, (fleet.run_dir / "logs" /
                                                 "supervisor.log").read_text()
            time.sleep(0.1)
        assert _wait_workers(fleet.url, 2) == 2
        out = fleet.run("scale", "workers", "1")  # a drained worker is not started again
        assert out.count("stopped") == 1
        time.sleep(1.5)
        assert fleet.workers() == 1
    finally:
        tally = load.stop()
    print("\n" + tally.line("scripts/cluster up --supervise, a worker killed"))
    log = (fleet.run_dir / "logs" / "supervisor.log").read_text()
    assert "worker-1 (pid" in log and "started again" in log and log.count("started again") == 1
    assert tally.succeeded > 100
    assert sum(tally.failed.values()) == 0 and tally.hung == 0, tally.line("supervise")
    supervisor = int((fleet.run_dir / "supervisor.pid").read_text())
    assert "supervisor" in fleet.run("down") and not Path(f"/proc/{supervisor}").exists()
