"""scripts/cluster's records and texts without daemons: the run directory, the spec, the
checks before `up`, and the status text."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from cluster_lib import fleet_status  # noqa: E402
from cluster_lib.fleet import check_service, port_taken  # noqa: E402
from cluster_lib.rundir import FleetError, FleetSpec, RunDir  # noqa: E402


def test_a_stale_pidfile_or_one_naming_another_program_is_removed(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    (tmp_path / "worker-1.pid").write_text("999999999\n")      # no such process
    (tmp_path / "worker-2.pid").write_text(f"{os.getpid()}\n")  # pytest, not `-m worker`
    (tmp_path / "worker-3.pid").write_text("garbage\n")
    assert run.members("worker") == [] and not list(tmp_path.glob("*.pid"))


def test_next_name_fills_the_first_gap(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.next_name("worker") == "worker-1"
    for n in (1, 2, 4):
        run.record(f"worker-{n}", 1)
    assert run.next_name("worker") == "worker-3" and run.next_name("gateway") == "gateway-1"


def test_the_spec_round_trips_and_its_absence_says_how_to_start(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with pytest.raises(FleetError, match="cluster up SERVICE"):
        run.spec()
    spec = FleetSpec("x.py:X", "0.0.0.0", 8100, frontend_port=5600)
    run.save(spec)
    assert run.spec() == spec
    assert (spec.frontend, spec.frontend_bind) == ("tcp://127.0.0.1:5600", "tcp://0.0.0.0:5600")
    assert spec.url == "http://127.0.0.1:8100"
    assert FleetSpec("x.py:X", "::").frontend == "tcp://[::1]:5555"
    run.forget()
    with pytest.raises(FleetError):
        run.spec()


def test_log_tail_reads_only_past_the_offset(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.logs.mkdir()
    run.log_path("worker-1").write_text("old run\nnew 1\nnew 2\n")
    assert run.log_tail("worker-1", offset=len("old run\n")) == "    new 1\n    new 2"
    assert run.log_tail("worker-9") == "    (empty)"


def test_check_service_wants_an_existing_file_and_a_class(tmp_path: Path) -> None:
    model = tmp_path / "model.py"
    model.write_text("")
    check_service(f"{model}:Model")
    check_service("package.module:Model")
    with pytest.raises(FleetError, match="no such file"):
        check_service(f"{tmp_path / 'missing.py'}:Model")
    with pytest.raises(FleetError, match="file.py:Class"):
        check_service(str(model))


def test_port_taken_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_taken("127.0.0.1", port)
    assert not port_taken("127.0.0.1", port)


def test_status_says_what_the_broker_thinks_of_each_worker() -> None:
    spec = FleetSpec("/m/mlp.py:MLP", service_name="mlp")
    stats = {"workers": [
        {"worker_id": "my-host-101-ab12", "service": "mlp", "slots": 2, "in_flight": 1,
         "draining": False},
        {"worker_id": "my-host-102-cd34", "service": "mlp", "slots": 2, "in_flight": 2,
         "draining": True},
        {"worker_id": "elsewhere-7-ee", "service": "mlp", "slots": 2, "in_flight": 0,
         "draining": False}],
        "endpoints": {"mlp.predict": {"queued": 3, "requests": 40}}}
    text = fleet_status.render(spec, Path("run"), [("broker", 100), ("worker-1", 101),
                                                   ("worker-2", 102), ("worker-3", 103)], stats)
    lines = text.splitlines()
    assert lines[0].startswith("mlp at http://127.0.0.1:8000")
    assert lines[2].endswith("serving, 1/2 slots busy")
    assert lines[3].endswith("draining, 2/2 slots busy")
    assert "not registered" in lines[4]
    assert "1 more worker(s) registered from elsewhere" in text
    assert "queue mlp.predict: 3 waiting, 40 requests served" in text
    down = fleet_status.render(spec, Path("run"), [("broker", 100)], None, "no answer")
    assert down.splitlines()[-1] == "broker statistics unavailable: no answer"
