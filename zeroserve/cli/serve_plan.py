"""What one ``zeroserve serve`` run starts (pure): a broker, a gateway, and each service's
workers, each with its command line and environment.

Workers are named ``worker-SERVICE-N``, or ``worker-N`` when the run serves one service. A
worker's own settings from the deployment
(``slots``, ``threads``, ``job_slots``) are flags on its command line, so they win over the
``ZEROSERVE_*`` variables that carry the run's shared settings to every daemon.
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from zeroserve.cli.gpus import GpuRequest, assign, visible_devices
from zeroserve.cli.targets import LoadedTarget
from zeroserve.deployment import Deployment, ServiceDeployment

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class Daemon:
    """One process to start: its name, ``argv`` and whole environment."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]

    @property
    def is_worker(self) -> bool:
        return self.name.startswith("worker-")


def command_line_deployment(targets: Sequence[str], workers: int) -> Deployment:
    """The deployment of ``zeroserve serve a.py:A b.py:B``: ``workers`` workers each, names
    not yet known ("")."""
    return Deployment(tuple(ServiceDeployment("", t, workers) for t in targets),
                      source="the command line")


def named(deployment: Deployment, loaded: Mapping[str, LoadedTarget]) -> Deployment:
    """``deployment`` with each service named as its target declares and its target naming
    the class (``loaded``: what each target serves). ValueError when a deployment file's
    service key is not the name its target declares, or when two entries serve the same
    service."""
    services = []
    for service in deployment.services:
        declared, target = loaded[service.target]
        if service.name and service.name != declared:
            raise ValueError(f"{deployment.source}:{service.line}: services.{service.name}: "
                             f"{service.target} serves {declared!r}; name the entry "
                             f"{declared!r} (the name clients call it by)")
        services.append(dataclasses.replace(service, name=declared, target=target))
    seen: dict[str, str] = {}
    for service in services:
        if service.name in seen:
            raise ValueError(f"{seen[service.name]} and {service.target} both serve "
                             f"{service.name!r}; serve each service once")
        seen[service.name] = service.target
    return dataclasses.replace(deployment, services=tuple(services))


def worker_names(deployment: Deployment) -> list[tuple[ServiceDeployment, str]]:
    """Each worker to start, with its service."""
    if len(deployment.services) == 1:
        return [(s, f"worker-{i + 1}") for s in deployment.services for i in range(s.workers)]
    return [(s, f"worker-{s.name}-{i + 1}") for s in deployment.services
            for i in range(s.workers)]


def gpu_requests(deployment: Deployment) -> list[GpuRequest]:
    """The GPUs each worker asks for (workers that ask for none included, with 0)."""
    return [GpuRequest(name, s.resources.gpus) for s, name in worker_names(deployment)]


def wants_gpus(deployment: Deployment) -> bool:
    return any(s.resources.gpus > 0 for s in deployment.services)


def plan_gpus(deployment: Deployment, devices: Sequence[str]
              ) -> dict[str, tuple[str, ...]] | None:
    """Each worker's devices, or None when no service asks for GPUs (then no worker's
    environment is touched). GpuShortage when they do not fit on ``devices``."""
    if not wants_gpus(deployment):
        return None
    return assign(gpu_requests(deployment), devices)


def daemons(deployment: Deployment, frontend: str, backend: str, config_file: str | None,
            env: Mapping[str, str], gpus: Mapping[str, tuple[str, ...]] | None
            ) -> list[Daemon]:
    """The broker (binding ``frontend`` and ``backend``), the gateway and the workers
    (connecting to ``backend``, the address to connect to), each with ``env`` and, where
    ``gpus`` is given, its own ``CUDA_VISIBLE_DEVICES``."""
    base = (sys.executable, "-m")
    extra = ("--config", config_file) if config_file else ()
    plan = [Daemon("broker", (*base, "broker", "--frontend", frontend, "--backend", backend,
                              *extra), dict(env)),
            Daemon("gateway", (*base, "gateway", "--frontend", connect_address(frontend), *extra),
                   dict(env))]
    for service, name in worker_names(deployment):
        worker_env = dict(env)
        if gpus is not None:
            worker_env[CUDA_VISIBLE_DEVICES] = visible_devices(gpus, name)
        plan.append(Daemon(name, (*base, "worker", service.target, "--backend",
                                  connect_address(backend), "--frontend",
                                  connect_address(frontend), *service.worker_flags(),
                                  *service.version_flags(), *extra),
                           worker_env))
    return plan


def connect_address(bind: str) -> str:
    """The address to connect to for a bind address (``*`` and 0.0.0.0 become loopback)."""
    return bind.replace("://*:", "://127.0.0.1:").replace("://0.0.0.0:", "://127.0.0.1:")
