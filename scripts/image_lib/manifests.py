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
import functools
import json
import math
import os
import posixpath
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node

from image_lib import ROOT, SERVICE_MOUNT
from image_lib.engine import ImageError, say
from zeroserve.config import env_name
from zeroserve.deployment import Deployment, DeploymentError, ServiceDeployment, parse_deployment

KUBERNETES = ROOT / "deploy" / "kubernetes"
# what an overlay may be made on: each has one example worker, which the overlay replaces
LAYERS = {"base": KUBERNETES / "base", "dev": KUBERNETES / "overlays" / "dev",
          "production": KUBERNETES / "overlays" / "production"}
SETTINGS = "zeroserve-settings"  # the ConfigMap of every daemon's settings
WITHOUT_EXAMPLE = "without-example"
MARK = "# Made by `scripts/image manifests"
SERVICE_LABEL = "zeroserve.io/service"
VERSION_LABEL = "zeroserve.io/version"
GPU = "nvidia.com/gpu"
# Settings that the base's flags, container env and probes fix; a ConfigMap value would be
# overridden (flags, env) or would break what the base's Services and probes expect.
PINNED = {
    "broker.frontend", "broker.backend", "broker.metrics_port", "broker.metrics_host",
    "gateway.frontend", "gateway.http_host", "gateway.http_port", "gateway.grpc_port",
    "worker.backend", "worker.frontend", "worker.job_host", "jobs.store_path",
}
_HASHED_SETTINGS = re.compile(SETTINGS + r"-[a-z0-9]{10}")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


@dataclass(frozen=True)
class Layer:
    """The kustomization the overlay builds on, as ``kubectl kustomize`` renders it: its
    example worker Deployments (the first is the template of every generated one) with their
    autoscalers and budgets, the images its containers run, and the broker addresses that its
    daemons use."""

    path: Path
    workers: tuple[dict, ...]
    autoscalers: tuple[dict, ...]
    budgets: tuple[dict, ...]
    images: tuple[str, ...]
    frontend: str  # the gateway's --frontend: the broker's frontend Service
    backend: str   # the example worker's --backend: the broker's backend Service

    @property
    def template(self) -> dict:
        return self.workers[0]

    def example_objects(self) -> list[dict]:
        """What the overlay deletes: the example workers, their autoscalers and budgets."""
        return [*self.workers, *self.autoscalers, *self.budgets]


def render(path: Path) -> list[dict]:
    """The objects of the kustomization ``path``; ImageError without kubectl or on failure."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ImageError("kubectl is needed (with its kustomize) to read the layer "
                         f"{path}; install it, as for `kubectl apply -k`")
    done = subprocess.run([kubectl, "kustomize", str(path)], text=True, capture_output=True,
                          timeout=120)
    if done.returncode != 0:
        raise ImageError(f"kubectl kustomize {path}: {done.stderr.strip()[-1500:]}")
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


@functools.cache
def read_layer(path: Path) -> Layer:
    """The :class:`Layer` of the kustomization ``path``; ImageError when it has no worker or
    no gateway to learn the conventions from."""
    objects = render(path)
    by_role: dict[str, list[dict]] = {}
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            role = obj["spec"]["template"]["metadata"]["labels"].get(
                "app.kubernetes.io/component", "")
            by_role.setdefault(role, []).append(obj)
    workers, gateways = by_role.get("worker", []), by_role.get("gateway", [])
    if not workers or not gateways:
        raise ImageError(f"{path}: no worker or gateway Deployment to take the conventions from")
    names = {w["metadata"]["name"] for w in workers}
    autoscalers = [obj for obj in objects if obj["kind"] == "HorizontalPodAutoscaler"
                   and obj["spec"]["scaleTargetRef"]["name"] in names]
    budgets = [obj for obj in objects if obj["kind"] == "PodDisruptionBudget"
               and any(_selects(obj["spec"]["selector"]["matchLabels"], w) for w in workers)]
    images = sorted({box["image"] for workload in objects if workload["kind"] in
                     ("Deployment", "StatefulSet")
                     for box in workload["spec"]["template"]["spec"]["containers"]})
    return Layer(path, tuple(workers), tuple(autoscalers), tuple(budgets), tuple(images),
                 _flag(gateways[0], "--frontend"), _flag(workers[0], "--backend"))


def _selects(selector: dict, workload: dict) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(key) == value for key, value in selector.items())


def _flag(deployment: dict, flag: str) -> str:
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    if flag not in args[:-1]:
        raise ImageError(f"{deployment['metadata']['name']}: no {flag} in its args")
    return str(args[args.index(flag) + 1])


# ---------------------------------------------------------------- checks


def check_for_kubernetes(deployment: Deployment, text: str) -> None:
    """DeploymentError listing what Kubernetes cannot run as the file asks: fractional GPUs,
    targets outside the file's folder (the image holds that folder at /srv/service), service
    names that make no Deployment name (or the same one twice), and settings that the
    manifests fix themselves."""
    source = deployment.source
    root = yaml.compose(text)
    problems: list[str] = []

    def problem(path: tuple[str, ...], what: str) -> None:
        problems.append(f"{source}:{key_line(root, path)}: {'.'.join(path)}: {what}")

    seen: dict[str, str] = {}
    for service in deployment.services:
        gpus = service.resources.gpus
        if gpus != int(gpus):
            problem(("services", service.name, "resources", "gpus"),
                    f"{gpus:g} is a share of one device, and Kubernetes gives whole GPUs "
                    f"({GPU}): give 0, 1 or more (sharing a device is for one host: "
                    "zeroserve serve, scripts/cluster)")
        if image_target(service.target) is None:
            problem(("services", service.name, "target"),
                    f"{service.target} is outside the deployment file's folder; the image "
                    f"holds that folder at {SERVICE_MOUNT} (scripts/image build --service)")
        name = deployment_name(service.name)
        if not _LABEL_VALUE.fullmatch(service.name) or len(service.name) > 63 or \
                not _DNS_LABEL.fullmatch(name) or len(name) > 63:
            problem(("services", service.name),
                    f"{name!r} is no Kubernetes name: use letters, digits, '-' and '_', "
                    "at most 46 characters")
        elif name in seen:
            problem(("services", service.name),
                    f"makes the Deployment {name}, as services.{seen[name]} does")
        else:
            seen[name] = service.name
    for section, values in deployment.settings.items():
        for key in values:
            if f"{section}.{key}" in PINNED:
                problem(("settings", section, key),
                        "the manifests set this one (the broker's Services, the probes' ports "
                        "and the job store's volume depend on it)")
    if problems:
        raise DeploymentError(source, problems)


def key_line(root: Node | None, path: tuple[str, ...]) -> int:
    """The line of the deepest key of ``path`` found in the composed document ``root``."""
    line, node = 0, root
    for part in path:
        if not isinstance(node, MappingNode):
            break
        found = [(k, v) for k, v in node.value if getattr(k, "value", None) == part]
        if not found:
            break
        key_node, node = found[0]
        line = key_node.start_mark.line + 1
    return line


def deployment_name(service: str) -> str:
    """``zeroserve-worker-NAME``, ``_`` made ``-`` (Kubernetes names allow no ``_``)."""
    return "zeroserve-worker-" + service.lower().replace("_", "-")


def image_target(target: str) -> str | None:
    """The worker's SERVICE argument inside the image: a ``.py`` target relative to the
    deployment file's folder under /srv/service, an absolute one or ``module:Class`` as it
    is; None for a file outside that folder."""
    module, sep, cls = target.rpartition(":")
    path = module if sep else target
    if not path.endswith(".py") or posixpath.isabs(path):
        return target
    relative = posixpath.normpath(path)
    if relative.startswith(".."):
        return None
    inside = f"{SERVICE_MOUNT}/{relative}"
    return f"{inside}:{cls}" if sep else inside


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
                   "--frontend", layer.frontend, *service.worker_flags()]
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

