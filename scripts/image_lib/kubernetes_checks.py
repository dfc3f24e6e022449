"""What a deployment file asks that Kubernetes cannot run as asked, found before anything is
written; each problem named by its key and line, as zeroserve.deployment names the file's own."""
from __future__ import annotations

import posixpath
import re

import yaml
from yaml.nodes import MappingNode, Node

from image_lib import SERVICE_MOUNT
from zeroserve.deployment import Deployment, DeploymentError

GPU = "nvidia.com/gpu"
# Settings that the base's flags, container env and probes fix; a ConfigMap value would be
# overridden (flags, env) or would break what the base's Services and probes expect.
PINNED = {
    "broker.frontend", "broker.backend", "broker.metrics_port", "broker.metrics_host",
    "gateway.frontend", "gateway.http_host", "gateway.http_port", "gateway.grpc_port",
    "worker.backend", "worker.frontend", "worker.job_host", "jobs.store_path",
}
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


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
