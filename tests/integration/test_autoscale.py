"""scripts/autoscale against a real fleet: a queue of slow calls adds a worker, idleness takes
it away again, each decision on one log line."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from cluster import TEST_SERVICES
from script_fleet import ScriptFleet
from steady_load import SteadyLoad

pytestmark = pytest.mark.integration


def _until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_autoscaler_adds_a_worker_under_a_queue_and_removes_it_when_idle(
        tmp_path: Path) -> None:
    fleet = ScriptFleet(tmp_path / "run")
    scaler = None
    try:
        fleet.up(f"{TEST_SERVICES}:Probe", "--workers", "1")
        scaler = fleet.autoscale("--min", "1", "--max", "2", "--interval", "0.2",
                                 "--cooldown", "1", "--idle", "1.5")
        # 8 callers of a 0.2 s call on one worker of 2 slots: about 6 wait in the queue
        load = SteadyLoad([fleet.url], "probe", "sleep", threads=8,
                          inputs={"seconds": 0.2}).start()
        try:
            added = _until(lambda: fleet.workers() == 2, 20)
        finally:
            tally = load.stop()
        assert added and sum(tally.failed.values()) == 0 and tally.hung == 0, \
            tally.line("autoscale up")
        assert _until(lambda: fleet.workers() == 1, 20)
    finally:
        if scaler is not None:
            scaler.terminate()
            log, _ = scaler.communicate(timeout=30)
        fleet.run("down", check=False)
    assert scaler.returncode == 0, log
    decisions = [line for line in log.splitlines() if " -> " in line]
    assert "1 -> 2 workers" in decisions[0] and "queued" in decisions[0], log
    assert "2 -> 1 workers" in decisions[1] and "idle" in decisions[1], log
