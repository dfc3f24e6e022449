"""The kustomization that ``scripts/image manifests`` builds on (deploy/kubernetes/base, or
overlays/dev or production), read as ``kubectl kustomize`` renders it."""
from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from image_lib import ROOT
from image_lib.engine import ImageError

KUBERNETES = ROOT / "deploy" / "kubernetes"
# what an overlay may be made on: each has one example worker, which the overlay replaces
LAYERS = {"base": KUBERNETES / "base", "dev": KUBERNETES / "overlays" / "dev",
          "production": KUBERNETES / "overlays" / "production"}
SETTINGS = "zeroserve-settings"  # the ConfigMap of every daemon's settings


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
