"""`zeroserve status` as a command: --once prints one table, --watch redraws it every second
with requests/s from the last two polls (the broker is faked; the clock and sleep come from the
container); --frontend and --config name the broker, the old --broker still does."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import zeroserve.cli.admin
from zeroserve.cli.main import main
from zeroserve.container import Container


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
def addresses() -> list[str]:
    """The addresses that the fake broker was asked at."""
    return []


@pytest.fixture
def polls(monkeypatch: pytest.MonkeyPatch, addresses: list[str]) -> list[dict]:
    """Successive STATS answers of a fake broker, taken one second apart on a fake clock."""
    answers = [_stats(100), _stats(350), _stats(350)]
    taken: list[dict] = []

    def fake_stats(address: str, **_: object) -> dict:
        addresses.append(address)
        taken.append(answers[len(taken)])
        return taken[-1]

    monkeypatch.setattr(zeroserve.cli.admin, "broker_stats", fake_stats)
    return taken


@pytest.fixture
def parts(polls: list[dict]) -> Container:
    """A container whose clock ticks one second per poll and whose sleep ends the test."""
    clock = iter([0.0, 1.0, 2.0])

    def fake_sleep(seconds: float) -> None:
        if len(polls) == 3:
            raise _Stop
    container = Container()
    container.clock.set(lambda: next(clock))
    container.sleep.set(fake_sleep)
    return container


# color=True: click drops escape sequences when its output is not a terminal
def test_once_prints_one_table_without_a_rate_or_screen_clearing(
        polls: list[dict], parts: Container) -> None:
    result = CliRunner().invoke(main, ["status", "--once"], color=True, obj=parts)
    assert result.exit_code == 0, result.output
    assert len(polls) == 1 and "\x1b[2J" not in result.output
    row = next(line for line in result.output.split("\n") if line.startswith("mlp.predict "))
    assert row.split()[2] == "-"


def test_watch_redraws_with_requests_per_second_between_polls(
        polls: list[dict], parts: Container) -> None:
    result = CliRunner().invoke(main, ["status", "--watch"], color=True, obj=parts)
    assert isinstance(result.exception, _Stop)
    frames = result.output.split("\x1b[2J\x1b[H")[1:]
    assert len(frames) == 3
    rates = [next(line for line in frame.split("\n") if line.startswith("mlp.predict ")).split()[2]
             for frame in frames]
    assert rates == ["-", "250", "0"]


def test_json_prints_the_raw_statistics_once(polls: list[dict], parts: Container) -> None:
    result = CliRunner().invoke(main, ["status", "--json", "--watch"], obj=parts)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["endpoints"]["mlp.predict"]["requests"] == 100


def test_frontend_names_the_broker_and_defaults_to_the_local_one(
        polls: list[dict], parts: Container, addresses: list[str]) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["status", "--json"], obj=parts).exit_code == 0
    result = runner.invoke(main, ["status", "--json", "--frontend", "tcp://10.0.0.1:7000"],
                           obj=parts)
    assert result.exit_code == 0, result.output
    assert addresses == ["tcp://127.0.0.1:5555", "tcp://10.0.0.1:7000"]


def test_config_file_gives_the_frontend(polls: list[dict], parts: Container,
                                        addresses: list[str], tmp_path) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("gateway:\n  frontend: tcp://10.0.0.9:5555\n")
    result = CliRunner().invoke(main, ["status", "--json", "--config", str(cfg)], obj=parts)
    assert result.exit_code == 0, result.output
    assert addresses == ["tcp://10.0.0.9:5555"]


def test_old_broker_flag_still_names_the_frontend_with_a_warning(
        polls: list[dict], parts: Container, addresses: list[str]) -> None:
    result = CliRunner().invoke(main, ["status", "--json", "--broker", "tcp://10.0.0.2:1"],
                                obj=parts)
    assert result.exit_code == 0, result.output
    assert addresses == ["tcp://10.0.0.2:1"]
    assert "--broker is deprecated" in result.stderr and "--frontend" in result.stderr
