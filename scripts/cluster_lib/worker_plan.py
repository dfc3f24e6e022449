"""Which service and which GPUs each worker of a fleet gets (pure: the fleet's spec and the
devices that its running workers hold in, names and devices out).

A fleet of one service names its workers ``worker-N``; a deployment's fleet names them
``worker-SERVICE-N``. GPUs follow :mod:`zeroserve.cli.gpus`: ``up`` places every worker
at once (and refuses before anything starts when they do not fit), while ``scale`` and the
supervisor place one new worker beside the devices that the running ones hold.
"""
from __future__ import annotations

from collections.abc import Mapping

from cluster_lib.rundir import FleetError, FleetSpec
from zeroserve.cli.gpus import WHOLE, GpuRequest, GpuShortage, assign, share


def service_of_worker(name: str) -> str:
    """The service in a worker's name (``worker-SERVICE-N``); "" for ``worker-N`` (a fleet of
    one service)."""
    service, sep, number = name[len("worker-"):].rpartition("-")
    return service if sep and number.isdigit() else ""


def worker_plan(spec: FleetSpec, workers: int) -> list[str]:
    """The service of each worker that ``up`` starts: the deployment's counts, or ``workers``
    of the one service ("")."""
    if spec.services:
        return [name for name, entry in spec.services.items()
                for _ in range(entry.get("workers", 1))]
    return [""] * workers


def gpus_of(spec: FleetSpec, worker: str) -> float:
    """The GPUs that the worker named ``worker`` asks for (its service's ``gpus``)."""
    return float(spec.services.get(service_of_worker(worker), {}).get("gpus", 0))


def plan_devices(spec: FleetSpec, services: list[str]) -> list[tuple[str, ...] | None]:
    """The devices of each worker that ``up`` starts (``services``: each one's service); None
    each when no service asks for GPUs. FleetError when they do not fit."""
    if not spec.wants_gpus():
        return [None] * len(services)
    requests = [GpuRequest(f"{service}#{i}", float(spec.services[service].get("gpus", 0)))
                for i, service in enumerate(services)]
    try:
        chosen = assign(requests, spec.gpus)
    except GpuShortage as exc:
        raise FleetError(str(exc)) from None
    return [chosen.get(r.worker, ()) for r in requests]


def devices_for(spec: FleetSpec, name: str, held: Mapping[str, tuple[str, ...]]
                ) -> tuple[str, ...]:
    """Devices for a new worker ``name`` beside those that running workers hold (``held``:
    worker name -> its devices); FleetError when they do not fit."""
    in_use: dict[str, int] = {}
    for other, devices in held.items():
        part = min(share(gpus_of(spec, other)), WHOLE)
        for device in devices:
            in_use[device] = in_use.get(device, 0) + part
    try:
        return assign([GpuRequest(name, gpus_of(spec, name))], spec.gpus, in_use).get(name, ())
    except GpuShortage as exc:
        raise FleetError(str(exc)) from None
