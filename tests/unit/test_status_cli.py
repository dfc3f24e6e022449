"""`zeroserve status` as a command: --once prints one table, --watch redraws it every second
with requests/s from the last two polls (the broker and the clock are faked)."""
from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

import zeroserve.cli.admin
from zeroserve.cli.main import main


def _stats(requests: int) -> dict:
    return {"broker_id": "b1", "uptime_s": 10.0, "malformed_dropped": 0,
            "workers": [{"worker_id": "w1", "service": "mlp", "slots": 2, "in_flight": 0,
                         "draining": False, "last_heartbeat_s": 0.2}],
            "endpoints": {"mlp.predict": {
                "queued": 0, "requests": requests, "batches": requests, "mean_batch_size": 1.0,
                "mean_queue_wait_ms": 0.1, "mean_exec_ms": 0.2, "batch_sizes": {1: requests},
                "max_batch_size": 1, "max_latency_ms": 0.0,
                "latency_model": {"a_s_per_row": 0.0, "b_s": 0.0002}}},
            "jobs": {}}


class _Stop(Exception):
    """Ends the live loop after the frames a test wants."""


@pytest.fixture
def polls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Successive STATS answers of a fake broker, taken one second apart on a fake clock."""
    answers = [_stats(100), _stats(350), _stats(350)]
    clock = iter([0.0, 1.0, 2.0])
    taken: list[dict] = []

    def fake_stats(address: str, **_: object) -> dict:
        taken.append(answers[len(taken)])
        return taken[-1]

    def fake_sleep(seconds: float) -> None:
        if len(taken) == 3:
            raise _Stop
    monkeypatch.setattr(zeroserve.cli.admin, "broker_stats", fake_stats)
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(time, "sleep", fake_sleep)
    return taken


# color=True: click drops escape sequences when its output is not a terminal
def test_once_prints_one_table_without_a_rate_or_screen_clearing(polls: list[dict]) -> None:
    result = CliRunner().invoke(main, ["status", "--once"], color=True)
    assert result.exit_code == 0, result.output
    assert len(polls) == 1 and "\x1b[2J" not in result.output
    row = next(line for line in result.output.split("\n") if line.startswith("mlp.predict "))
    assert row.split()[2] == "-"


def test_watch_redraws_with_requests_per_second_between_polls(polls: list[dict]) -> None:
    result = CliRunner().invoke(main, ["status", "--watch"], color=True)
    assert isinstance(result.exception, _Stop)
    frames = result.output.split("\x1b[2J\x1b[H")[1:]
    assert len(frames) == 3
    rates = [next(line for line in frame.split("\n") if line.startswith("mlp.predict ")).split()[2]
             for frame in frames]
    assert rates == ["-", "250", "0"]


def test_json_prints_the_raw_statistics_once(polls: list[dict]) -> None:
    result = CliRunner().invoke(main, ["status", "--json", "--watch"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["endpoints"]["mlp.predict"]["requests"] == 100
