"""scripts/cluster with a deployment, without daemons: which service and GPUs each worker
gets, the devices it keeps in the run directory, and the status text per service."""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from cluster_lib import fleet_status  # noqa: E402
from cluster_lib.rundir import FleetError, FleetSpec, RunDir  # noqa: E402
from cluster_lib.worker_plan import (  # noqa: E402
    devices_for,
    plan_devices,
    service_of_worker,
    worker_plan,
)


def _spec(**gpus: float) -> FleetSpec:
    return FleetSpec("/d/deploy.yaml", deployment="/d/deploy.yaml", gpus=["0", "1"],
                     services={name: {"target": f"/d/{name}.py:C", "flags": [], "gpus": g,
                                      "workers": 2, "version": 2}
                               for name, g in gpus.items()})


def test_worker_names_carry_their_service() -> None:
    assert service_of_worker("worker-embed-3") == "embed"
    assert service_of_worker("worker-my-model-12") == "my-model"
    assert service_of_worker("worker-3") == ""
    assert worker_plan(_spec(embed=0, rank=0), 9) == ["embed", "embed", "rank", "rank"]
    assert worker_plan(FleetSpec("/m.py:M"), 3) == ["", "", ""]


def test_up_places_every_worker_at_once_or_refuses() -> None:
    assert plan_devices(_spec(embed=0, rank=0), ["embed", "rank"]) == [None, None]
    assert plan_devices(_spec(embed=1, rank=0), ["embed", "embed", "rank"]) == [
        ("0",), ("1",), ()]
    assert plan_devices(_spec(embed=0.5), ["embed"] * 4) == [("0",), ("0",), ("1",), ("1",)]
    with pytest.raises(FleetError, match="not enough GPUs"):
        plan_devices(_spec(embed=1), ["embed"] * 3)


def test_a_new_worker_is_placed_beside_what_running_workers_hold() -> None:
    spec = _spec(embed=1, rank=0.5)
    assert devices_for(spec, "worker-embed-2", {"worker-embed-1": ("0",)}) == ("1",)
    assert devices_for(spec, "worker-rank-2", {"worker-rank-1": ("0",),
                                               "worker-embed-1": ("1",)}) == ("0",)
    assert devices_for(spec, "worker-rank-3", {"worker-rank-1": ("0",), "worker-rank-2": ("0",)}
                       ) == ("1",)
    with pytest.raises(FleetError, match="not enough GPUs"):
        devices_for(spec, "worker-embed-3", {"worker-embed-1": ("0",), "worker-rank-1": ("1",)})


def test_a_workers_devices_are_kept_until_it_is_dropped_and_the_spec_round_trips(
        tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    spec = _spec(embed=1)
    spec.env = {"ZEROSERVE_REQUEST_DEFAULT_TIMEOUT_S": "10"}
    run.save(spec)
    assert asdict(run.spec()) == asdict(spec)
    assert run.spec().wants_gpus() and not _spec(embed=0).wants_gpus()
    run.record_devices("worker-embed-1", ("0", "1"))
    run.record_devices("worker-rank-1", ())
    assert run.devices("worker-embed-1") == ("0", "1") and run.devices("worker-rank-1") == ()
    assert run.devices("worker-embed-2") is None
    run.drop("worker-embed-1")
    assert run.devices("worker-embed-1") is None


def test_status_groups_a_deployments_workers_by_service() -> None:
    spec = _spec(embed=1, rank=0)
    stats = {"workers": [
        {"worker_id": "h-101-a", "service": "embed", "slots": 2, "in_flight": 1,
         "draining": False, "info": {"devices": "0"}},
        {"worker_id": "h-102-b", "service": "rank", "slots": 2, "in_flight": 0,
         "draining": False, "info": {"devices": ""}}],
        "endpoints": {"embed.encode": {"queued": 2, "requests": 9},
                      "rank.top": {"queued": 0, "requests": 4}}}
    text = fleet_status.render(spec, Path("run"), [("broker", 100), ("gateway-1", 99),
                                                   ("worker-embed-1", 101),
                                                   ("worker-rank-1", 102)], stats)
    assert text.splitlines()[1:] == [
        "broker     pid 100",
        "gateway-1  pid 99",
        "service embed (version 2, /d/embed.py:C): 1 worker(s)",
        "worker-embed-1 pid 101      serving, 1/2 slots busy, GPUs 0",
        "queue embed.encode: 2 waiting, 9 requests served",
        "service rank (version 2, /d/rank.py:C): 1 worker(s)",
        "worker-rank-1 pid 102      serving, 0/2 slots busy, GPUs none",
        "queue rank.top: 0 waiting, 4 requests served"]
    assert text.splitlines()[0].startswith("embed, rank at http://127.0.0.1:8000")
