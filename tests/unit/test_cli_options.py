"""The flags are spelled alike on every command; old spellings still work, hidden, with a
deprecation warning, and the new spelling wins when both are given."""
from __future__ import annotations

import json
from typing import Any

import click
import pytest
from click.testing import CliRunner

from zeroserve.cli.main import main
from zeroserve.cli.options import (
    backend_option,
    frontend_option,
    grpc_port_option,
    http_port_option,
)


@click.command()
@frontend_option("gateway__frontend", "frontend")
@http_port_option
@grpc_port_option
def gateway_like(**options: Any) -> None:
    click.echo(json.dumps(options))


@click.command()
@backend_option("worker__backend", "backend")
def worker_like(**options: Any) -> None:
    click.echo(json.dumps(options))


def _run(command: click.Command, args: list[str]) -> tuple[dict, str]:
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


@pytest.mark.parametrize("old, new, dest, value", [
    ("--http", "--http-port", "gateway__http_port", 8100),
    ("--grpc", "--grpc-port", "gateway__grpc_port", 8101),
    ("--broker", "--frontend", "gateway__frontend", "tcp://10.0.0.1:5555"),
])
def test_an_old_gateway_flag_sets_the_new_one_with_a_warning(old, new, dest, value):
    options, stderr = _run(gateway_like, [old, str(value)])
    assert options[dest] == value
    assert f"{old} is deprecated" in stderr and f"use {new}" in stderr


def test_the_old_worker_broker_flag_sets_the_backend_with_a_warning():
    options, stderr = _run(worker_like, ["--broker", "tcp://10.0.0.1:5556"])
    assert options["worker__backend"] == "tcp://10.0.0.1:5556"
    assert "--broker is deprecated" in stderr and "use --backend" in stderr


@pytest.mark.parametrize("args", [["--http", "1", "--http-port", "2"],
                                  ["--http-port", "2", "--http", "1"]])
def test_the_new_flag_wins_over_the_old_one(args):
    options, _ = _run(gateway_like, args)
    assert options["gateway__http_port"] == 2


def test_new_flags_print_no_warning_and_unset_ones_stay_unset():
    options, stderr = _run(gateway_like, ["--grpc-port", "0"])
    assert options == {"gateway__frontend": None, "gateway__http_port": None,
                       "gateway__grpc_port": 0}
    assert "deprecated" not in stderr


@pytest.mark.parametrize("command, shown, hidden", [
    ("gateway", ["--frontend", "--http-port", "--grpc-port", "--config"],
     ["--broker", "--http ", "--grpc "]),
    ("worker", ["--backend", "--config"], ["--broker"]),
    ("status", ["--frontend", "--config"], ["--broker"]),
    ("serve", ["--http-port", "--grpc-port", "--metrics-port", "--frontend", "--backend",
               "--config"], ["--broker"]),
    ("broker", ["--frontend", "--backend", "--metrics-port", "--config"], ["--broker"]),
])
def test_help_shows_the_one_spelling_of_each_flag(command, shown, hidden):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    for flag in shown:
        assert flag in result.output
    for flag in hidden:
        assert flag not in result.output
