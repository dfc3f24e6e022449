"""``scripts/image manifests DEPLOYMENT.yaml``: a kustomize overlay of deploy/kubernetes/base
(or of overlays/dev or overlays/production, ``--on``) that runs the deployment file's services,
one worker Deployment each, and nothing else.

The layer it builds on is read as ``kubectl kustomize`` renders it, and its example worker is
the template of every generated one: its pod security, drain, job-lane sysctl, volumes,
environment and, in production, its CURVE keys from Secrets. The overlay (``--out DIR``) holds:

- ``without-example/``: the layer with its example worker Deployment (and the autoscaler and
  budget of it) deleted: a kustomization of its own, so that a service of the file may take
  the example's name;
- ``worker-NAME.yaml`` per service: a Deployment with the service's target as the worker's
  SERVICE, ``replicas: workers``, ``--slots/--threads/--job-slots``, ``--frontend`` at the
  broker's frontend Service (for dependency calls), ``resources.cpus`` as CPU requests and
  limits, ``resources.gpus`` as whole ``nvidia.com/gpu``, the version as the label
  ``zeroserve.io/version``; its PodDisruptionBudget (one worker at a time); and, where the
  layer autoscales its example, an autoscaler from ``workers`` up (which then owns the
  replica count);
- ``settings.env``: the deployment's ``settings`` and the services' batching limits
  (``ZEROSERVE_BATCHING_OVERRIDES``), merged into the layer's ConfigMap, which every daemon
  reads (the broker batches);
- ``kustomization.yaml``: the above, and the image every container runs.

Everything the file asks that Kubernetes cannot give is refused before anything is written,
each problem with its key and line, as the deployment file's own checks are (exit status 2).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from image_lib import SERVICE_MOUNT
from image_lib.engine import ImageError, say
from image_lib.kubernetes_checks import GPU, check_for_kubernetes, deployment_name, image_target
from image_lib.layer import LAYERS, SETTINGS, Layer, read_layer
from zeroserve.config import env_name
from zeroserve.deployment import Deployment, DeploymentError, ServiceDeployment, parse_deployment

WITHOUT_EXAMPLE = "without-example"
MARK = "# Made by `scripts/image manifests"
SERVICE_LABEL = "zeroserve.io/service"
VERSION_LABEL = "zeroserve.io/version"
_HASHED_SETTINGS = re.compile(SETTINGS + r"-[a-z0-9]{10}")


# ---------------------------------------------------------------- objects


def cpu_quantity(cpus: float) -> str:
    """``2`` -> "2", ``0.5`` -> "500m" (rounded up to a millicore)."""
    if cpus == int(cpus):
        return str(int(cpus))
    return f"{math.ceil(cpus * 1000)}m"


def worker_deployment(service: ServiceDeployment, layer: Layer) -> dict:
    """The Deployment of ``service``'s workers, made from the layer's example worker."""
    worker = copy.deepcopy(layer.template)
    name = deployment_name(service.name)
    selector = {**worker["spec"]["selector"]["matchLabels"], SERVICE_LABEL: service.name}
    labels = {**selector, VERSION_LABEL: str(service.version)}
    worker["metadata"] = {"name": name, "labels": labels}
    worker["spec"]["replicas"] = service.workers
    worker["spec"]["selector"]["matchLabels"] = selector  # the version stays out: immutable
    worker["spec"]["template"]["metadata"]["labels"] = labels
    pod = worker["spec"]["template"]["spec"]
    [box] = pod["containers"]
    box["args"] = ["worker", image_target(service.target), "--backend", layer.backend,
                   "--frontend", layer.frontend, *service.worker_flags(), *service.version_flags()]
    for source in box.get("envFrom", []):
        reference = source.get("configMapRef", {})
        if _HASHED_SETTINGS.fullmatch(reference.get("name", "")):
            reference["name"] = SETTINGS  # kustomize names it again, with the merged hash
    resources = box.setdefault("resources", {})
    requests, limits = resources.setdefault("requests", {}), resources.setdefault("limits", {})
    if service.resources.cpus:
        requests["cpu"] = limits["cpu"] = cpu_quantity(service.resources.cpus)
    if service.resources.gpus:
        requests[GPU] = limits[GPU] = int(service.resources.gpus)
        pod["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    return worker


def autoscaler(service: ServiceDeployment, worker: dict, layer: Layer) -> dict | None:
    """Where the layer scales its example worker (production: on the broker's queue depth),
    the same for ``service``'s workers, from ``workers`` up; the Deployment then leaves its
    replica count to the autoscaler. None where the layer has none, or for 0 workers."""
    if not layer.autoscalers or service.workers < 1:
        return None
    scaler = copy.deepcopy(layer.autoscalers[0])
    name = worker["metadata"]["name"]
    scaler["metadata"] = {"name": name, "labels": worker["spec"]["selector"]["matchLabels"]}
    spec = scaler["spec"]
    spec["scaleTargetRef"]["name"] = name
    spec["minReplicas"] = service.workers
    spec["maxReplicas"] = max(spec["maxReplicas"], service.workers)
    for metric in spec.get("metrics", []):
        matched = metric.get("external", {}).get("metric", {}).get("selector", {})
        if "service" in matched.get("matchLabels", {}):
            matched["matchLabels"]["service"] = service.name
    del worker["spec"]["replicas"]  # a replicas field would make every apply reset it
    return scaler


def disruption_budget(service: ServiceDeployment, worker: dict) -> dict:
    """Voluntary disruptions take one worker of the service at a time (each drains)."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": worker["metadata"]["name"],
                         "labels": worker["spec"]["selector"]["matchLabels"]},
            "spec": {"maxUnavailable": 1,
                     "selector": {"matchLabels": worker["spec"]["selector"]["matchLabels"]}}}


def settings_env(deployment: Deployment) -> dict[str, str]:
    """The deployment's settings and batching limits as ``ZEROSERVE_*`` variables (strings
    as they are, other values as JSON, which the settings read as YAML)."""
    return {env_name(path): value if isinstance(value, str) else json.dumps(value)
            for path, value in sorted(deployment.overrides().items())}


def image_entries(layer: Layer, image: str) -> list[dict[str, str]]:
    """kustomize ``images`` entries that make every image of ``layer`` ``image``
    (``registry/name:tag`` or ``name@digest``)."""
    if "@" in image:
        name, digest = image.split("@", 1)
        new = {"newName": name, "digest": digest}
    else:
        slash = image.rfind("/")
        name, sep, tag = image[slash + 1:].partition(":")
        new = {"newName": image[:slash + 1] + name, **({"newTag": tag} if sep else {})}
    return [{"name": _untagged(old), **new} for old in layer.images]


def _untagged(image: str) -> str:
    image = image.split("@", 1)[0]
    slash = image.rfind("/")
    return image[:slash + 1] + image[slash + 1:].partition(":")[0]


# ---------------------------------------------------------------- the overlay


def write_overlay(deployment: Deployment, source: Path, out: Path, image: str,
                  on: Path = LAYERS["base"]) -> list[Path]:
    """Write the overlay of ``deployment`` (read from ``source``) on the kustomization ``on``
    into ``out``; the files written. ImageError when ``out`` holds files that this command
    did not make, or ``on`` cannot be rendered."""
    layer = read_layer(on)
    _clear(out)
    (out / WITHOUT_EXAMPLE).mkdir(parents=True, exist_ok=True)
    written = []
    made_from = f"{MARK} {source}`; make it again rather than edit it.\n"
    # one patch each: kustomize 5.5 fails on a file of several deletions
    deletions = [{"patch": yaml.safe_dump(
        {"$patch": "delete", "apiVersion": obj["apiVersion"], "kind": obj["kind"],
         "metadata": {"name": obj["metadata"]["name"]}}, sort_keys=False)}
        for obj in layer.example_objects()]
    without = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
               "resources": [os.path.relpath(on, out / WITHOUT_EXAMPLE)],
               "patches": deletions}
    written.append(_write(out / WITHOUT_EXAMPLE / "kustomization.yaml",
                          made_from + f"# {on.name} without its example worker (and the "
                          "autoscaler and budget of it).\n", [without]))
    resources = [WITHOUT_EXAMPLE]
    for service in deployment.services:
        worker = worker_deployment(service, layer)
        scaler = autoscaler(service, worker, layer)
        file = f"worker-{worker['metadata']['name'].removeprefix('zeroserve-worker-')}.yaml"
        written.append(_write(out / file, f"# The workers of {service.name} "
                              f"({deployment.source}:{service.line}).\n",
                              [worker, disruption_budget(service, worker),
                               *([scaler] if scaler else [])]))
        resources.append(file)
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": resources,
        "labels": [{"pairs": {"app.kubernetes.io/part-of": "zeroserve"}}],
        "images": image_entries(layer, image)}
    variables = settings_env(deployment)
    if variables:
        env_file = out / "settings.env"
        env_file.write_text(f"# The settings of {source}, for every daemon.\n"
                            + "".join(f"{k}={v}\n" for k, v in variables.items()))
        written.append(env_file)
        kustomization["configMapGenerator"] = [{"name": SETTINGS, "behavior": "merge",
                                                "envs": ["settings.env"]}]
    written.insert(0, _write(out / "kustomization.yaml",
                             made_from + "#   kubectl kustomize DIR   # or: kubectl apply -k DIR\n",
                             [kustomization]))
    return written


class _PlainDumper(yaml.SafeDumper):
    """Writes a mapping used twice (labels and selectors) twice, never as an alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text_block(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    """Text of several lines (an inline patch) as a ``|`` block."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text
                                   else None)


_PlainDumper.add_representer(str, _text_block)


def _write(path: Path, header: str, documents: list[dict]) -> Path:
    path.write_text(header + yaml.dump_all(documents, Dumper=_PlainDumper, sort_keys=False))
    return path


def _clear(out: Path) -> None:
    """Empty ``out`` of an earlier run's files; refuse a folder with anything else in it."""
    if not out.exists() or not any(out.iterdir()):
        return
    made = out / "kustomization.yaml"
    if not made.is_file() or not made.read_text().startswith(MARK):
        raise ImageError(f"{out} is not empty and scripts/image manifests did not make it: "
                         "name another --out")
    for entry in out.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def manifests(args: argparse.Namespace) -> int:
    """The ``manifests`` command: exit status 2 (and every problem on stderr) for a file that
    cannot run on Kubernetes, 0 once the overlay is written."""
    source = Path(args.deployment)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ImageError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        deployment = parse_deployment(text, str(source))  # targets as written: the image's
        check_for_kubernetes(deployment, text)
    except DeploymentError as exc:
        print(f"image: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or f"{source.stem}-kubernetes")
    written = write_overlay(deployment, source, out, args.image, LAYERS[args.on])
    counts = ", ".join(f"{s.name} x{s.workers}" for s in deployment.services)
    say(f"wrote {len(written)} files to {out}: one worker Deployment per service ({counts}), "
        f"image {args.image}, on {args.on} without its example worker")
    say(f"render it with `kubectl kustomize {out}`, deploy it with `kubectl apply -k {out}`; "
        f"the image needs {source.parent}/ at {SERVICE_MOUNT} "
        f"(scripts/image build --service {source.parent}/FILE.py:Class)")
    return 0
