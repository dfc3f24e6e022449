"""Which GPUs each worker of a deployment gets (pure), and which GPUs this host has.

A worker that asks for ``gpus: N`` (a whole number) gets N devices of its own:
no other worker is given them. A worker that asks for a fraction below 1
(``gpus: 0.5``) gets a share of one device, which it shares only with other
fractional workers, as long as the shares on a device add up to at most one
(two workers of 0.5, three of 0.3). The launcher sets each worker's
``CUDA_VISIBLE_DEVICES`` to its devices; a worker that asks for none sees none
(``CUDA_VISIBLE_DEVICES=""``) when any worker of the deployment asks for some, and
its environment is left alone otherwise.

:func:`assign` hands out the devices: whole-device workers first, in the order
given, each the lowest free devices; then the fractional ones, largest share
first, each on the first device whose remaining share fits (devices already
shared first, then free ones). Shares are counted in thousandths, so that
three workers of 0.333 fit on one device and no float sum is compared.
"""
from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

WHOLE = 1000  # one device, in thousandths


class GpuShortage(ValueError):
    """The workers ask for more GPUs than the host has (or the ``--gpus`` list names)."""


@dataclass(frozen=True)
class GpuRequest:
    """One worker (by name) and the GPUs it asks for."""

    worker: str
    gpus: float


def share(gpus: float) -> int:
    """``gpus`` in thousandths of a device (``0.5`` -> 500, ``2`` -> 2000)."""
    return round(gpus * WHOLE)


def parse_devices(text: str) -> list[str]:
    """The devices of a ``--gpus`` list (``0,1,2,3``, or UUIDs); ValueError for an empty
    entry or a device named twice."""
    devices = [d.strip() for d in text.split(",")]
    if not text.strip() or any(not d for d in devices):
        raise ValueError(f"--gpus must list devices separated by commas (0,1,2,3), not {text!r}")
    twice = sorted({d for d in devices if devices.count(d) > 1})
    if twice:
        raise ValueError(f"--gpus names device(s) {', '.join(twice)} more than once")
    return devices


_GPU_LINE = re.compile(r"^GPU (\d+):")


def listed_devices(nvidia_smi_output: str) -> list[str]:
    """The device indexes in ``nvidia-smi -L`` output (``GPU 0: NVIDIA H200 (UUID: ...)``)."""
    return [m.group(1) for m in map(_GPU_LINE.match, nvidia_smi_output.splitlines()) if m]


def detect_devices(run: Callable[..., subprocess.CompletedProcess] = subprocess.run
                   ) -> list[str]:
    """This host's GPUs as ``nvidia-smi -L`` lists them; none when it is missing or fails."""
    try:
        done = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return listed_devices(done.stdout) if done.returncode == 0 else []


def assign(requests: Sequence[GpuRequest], devices: Sequence[str],
           in_use: Mapping[str, int] | None = None) -> dict[str, tuple[str, ...]]:
    """The devices of each worker that asks for GPUs (see the module docstring); workers that
    ask for none are left out. ``in_use`` gives the thousandths of each device that running
    workers hold already (a whole device: :data:`WHOLE`). Raises GpuShortage, naming what is
    asked for and what there is, when the requests do not fit."""
    used = {d: 0 for d in devices}
    for device, taken in (in_use or {}).items():
        if device in used:
            used[device] += taken
    chosen: dict[str, tuple[str, ...]] = {}
    whole = [r for r in requests if share(r.gpus) >= WHOLE]
    fractional = sorted((r for r in requests if 0 < share(r.gpus) < WHOLE),
                        key=lambda r: -share(r.gpus))
    for request in whole:
        count = share(request.gpus) // WHOLE
        free = [d for d in devices if used[d] == 0]
        if len(free) < count:
            raise GpuShortage(_shortage(requests, devices, in_use or {}, request))
        chosen[request.worker] = tuple(free[:count])
        for device in free[:count]:
            used[device] = WHOLE
    for request in fractional:
        need = share(request.gpus)
        shared = [d for d in devices if 0 < used[d] and used[d] + need <= WHOLE]
        free = [d for d in devices if used[d] == 0]
        fits = shared or free
        if not fits:
            raise GpuShortage(_shortage(requests, devices, in_use or {}, request))
        chosen[request.worker] = (fits[0],)
        used[fits[0]] += need
    return chosen


def _shortage(requests: Sequence[GpuRequest], devices: Sequence[str],
              in_use: Mapping[str, int], stuck: GpuRequest) -> str:
    asked = sum(r.gpus for r in requests)
    busy = f", {sum(1 for d in devices if in_use.get(d))} of them in use already" \
        if any(in_use.get(d) for d in devices) else ""
    where = f"{len(devices)} device(s) ({', '.join(devices)}){busy}" if devices else \
        "no device (nvidia-smi lists none; name them with --gpus 0,1,...)"
    return (f"not enough GPUs: {len(requests)} worker(s) ask for {asked:g} in all and "
            f"{stuck.worker} (gpus: {stuck.gpus:g}) does not fit on {where}; a device is "
            "never given to two workers unless both ask for a fraction of one")


def visible_devices(chosen: Mapping[str, tuple[str, ...]], worker: str) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value of ``worker`` ("" for one that was given none)."""
    return ",".join(chosen.get(worker, ()))
