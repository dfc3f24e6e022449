"""The Kubernetes manifests in deploy/kubernetes: every overlay renders with ``kubectl
kustomize``, every object validates against the Kubernetes 1.32 schemas (offline, strict), and
what a fleet needs holds: one broker, probes the gateway answers, ports that the daemons' own
flags bind, non-root containers, settings that exist, drains within the grace period, network
policies that let the right daemons in, autoscalers on the broker's queue depth.

The daemons' settings are read as the daemons read them: their ``args`` through the real click
commands, their environment (the ConfigMap and the container's ``env``) through
``zeroserve.config.load_settings``.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import ipaddress
import posixpath
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from zeroserve.cli.main import main as zeroserve_command
from zeroserve.config import SECTIONS, Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "production", "gpu", "keda")
KUBERNETES_VERSION = "1.32.0"
POD_IP = "10.1.2.3"  # what status.podIP reads as here
KEDA_SPEC_FIELDS = {"scaleTargetRef", "pollingInterval", "cooldownPeriod",
                    "initialCooldownPeriod", "idleReplicaCount", "minReplicaCount",
                    "maxReplicaCount", "fallback", "advanced", "triggers"}


# ---------------------------------------------------------------- rendering and reading


@functools.cache
def render(folder: str) -> tuple[dict, ...]:
    """The objects ``kubectl kustomize`` makes of ``deploy/kubernetes/<folder>``."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with kustomize v5) is needed to render deploy/kubernetes")
    done = subprocess.run([kubectl, "kustomize", str(KUSTOMIZE / folder)], text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {folder}: {done.stderr}"
    return tuple(obj for obj in yaml.safe_load_all(done.stdout) if obj)


def overlay(name: str) -> tuple[dict, ...]:
    return render(f"overlays/{name}")


def of_kind(objects: tuple[dict, ...], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: tuple[dict, ...], kind: str, name: str) -> dict:
    found = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} in the render"
    return found[0]


def workloads(objects: tuple[dict, ...]) -> list[dict]:
    return [obj for obj in objects if obj["kind"] in ("Deployment", "StatefulSet")]


def component(workload: dict) -> str:
    return workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def only_workload(objects: tuple[dict, ...], role: str) -> dict:
    found = [w for w in workloads(objects) if component(w) == role]
    assert found, f"no {role} workload"
    return found[0]


def container(workload: dict) -> dict:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: one container expected"
    return containers[0]


def environment(objects: tuple[dict, ...], box: dict) -> dict[str, str]:
    """The container's environment as the kubelet gives it: its ConfigMaps, then ``env``."""
    env: dict[str, str] = {}
    for source in box.get("envFrom", []):
        env.update(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in box.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}, var
            env[var["name"]] = POD_IP
    return env


def daemon_settings(objects: tuple[dict, ...], workload: dict) -> Settings:
    """The settings the container's daemon runs with: its args parsed by the zeroserve command
    they name, layered over its environment."""
    box = container(workload)
    role, *rest = box["args"]
    command = zeroserve_command.commands[role]
    params = command.make_context(role, list(rest)).params
    flags = {name.replace("__", "."): value for name, value in params.items() if "__" in name}
    return load_settings(params.get("config_file"), flags,
                         environ=environment(objects, box))


def ports_of(box: dict) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in box.get("ports", [])}


def address(endpoint: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(endpoint)
    assert parts.scheme == "tcp" and parts.hostname and parts.port, endpoint
    return parts.hostname, parts.port


def selects(selector: dict, workload: dict) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(key) == value for key, value in selector.items())


# ---------------------------------------------------------------- schemas


@pytest.mark.parametrize("folder", ["base", *(f"overlays/{name}" for name in OVERLAYS)])
def test_every_object_of_every_overlay_validates_against_the_kubernetes_schemas(folder: str):
    objects = render(folder)
    assert objects
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # no schema for KEDA's CRDs: test_keda_scaled_object checks its fields
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_validation_refuses_a_misspelt_field():
    broker = dict(only_workload(overlay("dev"), "broker"))
    broker["spec"] = {**broker["spec"], "replica": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broker, KUBERNETES_VERSION, strict=True)


# ---------------------------------------------------------------- the broker


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_broker_is_one_statefulset_with_its_job_store_on_a_claimed_volume(name: str):
    objects = overlay(name)
    brokers = [w for w in workloads(objects) if component(w) == "broker"]
    assert [(b["kind"], b["spec"]["replicas"]) for b in brokers] == [("StatefulSet", 1)]
    broker = brokers[0]
    scaled = {obj["spec"]["scaleTargetRef"]["name"] for obj in objects
              if obj["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")}
    assert broker["metadata"]["name"] not in scaled, "an autoscaler would run two brokers"
    store = daemon_settings(objects, broker).jobs.store_path
    claims = {claim["metadata"]["name"] for claim in broker["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in container(broker)["volumeMounts"]}
    assert mounts.get(posixpath.dirname(store)) in claims, \
        f"the job store {store} is not on the StatefulSet's claim"


# ---------------------------------------------------------------- ports and probes


def _service_for(objects: tuple[dict, ...], endpoint: str, target: dict) -> int:
    """The container port of ``target`` that the Service named in ``endpoint`` leads to."""
    host, port = address(endpoint)
    service = named(objects, "Service", host)
    assert selects(service["spec"]["selector"], target), f"Service {host} selects no broker"
    [entry] = [p for p in service["spec"]["ports"] if p["port"] == port]
    wanted = entry.get("targetPort", port)
    return ports_of(container(target))[wanted] if isinstance(wanted, str) else wanted


@pytest.mark.parametrize("name", OVERLAYS)
def test_ports_and_addresses_match_what_the_daemons_flags_bind(name: str):
    objects = overlay(name)
    broker = only_workload(objects, "broker")
    gateway = only_workload(objects, "gateway")
    bound = daemon_settings(objects, broker).broker
    broker_ports = ports_of(container(broker))
    assert broker_ports["frontend"] == address(bound.frontend)[1]
    assert broker_ports["backend"] == address(bound.backend)[1]
    assert broker_ports["metrics"] == bound.metrics_port
    assert bound.metrics_host == "0.0.0.0", "the kubelet and Prometheus reach the pod's address"
    assert ipaddress.ip_address(address(bound.frontend)[0]).is_unspecified
    assert ipaddress.ip_address(address(bound.backend)[0]).is_unspecified

    served = daemon_settings(objects, gateway)
    assert ports_of(container(gateway)) == {"http": served.gateway.http_port,
                                            "grpc": served.gateway.grpc_port}
    assert served.gateway.http_host == "0.0.0.0"
    assert _service_for(objects, served.gateway.frontend, broker) == broker_ports["frontend"]
    workers = [w for w in workloads(objects) if component(w) == "worker"]
    assert workers
    for worker in workers:
        settings = daemon_settings(objects, worker)
        assert _service_for(objects, settings.worker.backend, broker) == broker_ports["backend"]
        assert settings.worker.job_host == POD_IP, "the lane must announce the pod's address"
    front = named(objects, "Service", "zeroserve")
    assert selects(front["spec"]["selector"], gateway)
    assert {p["name"]: ports_of(container(gateway))[p["targetPort"]]
            for p in front["spec"]["ports"]} == {"http": served.gateway.http_port,
                                                 "grpc": served.gateway.grpc_port}


@pytest.mark.parametrize("name", OVERLAYS)
def test_probes_ask_paths_the_gateway_serves_without_a_key_on_its_http_port(name: str):
    from gateway.rest import routes

    objects = overlay(name)
    gateway = only_workload(objects, "gateway")
    box = container(gateway)
    http_port = daemon_settings(objects, gateway).gateway.http_port
    served = {pattern for pattern, *_ in routes({})}
    public = daemon_settings(objects, gateway).gateway.public_paths
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = box[probe]["httpGet"]
        assert get["path"] == path and path in served and path in public
        port = get["port"]
        assert (ports_of(box)[port] if isinstance(port, str) else port) == http_port
    broker = only_workload(objects, "broker")
    ready = container(broker)["readinessProbe"]["httpGet"]
    assert (ready["path"], ports_of(container(broker))[ready["port"]]) == \
        ("/metrics", daemon_settings(objects, broker).broker.metrics_port)


# ---------------------------------------------------------------- pods


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_container_runs_as_the_images_non_root_user(name: str):
    image_user = re.search(r"^USER (\d+):(\d+)$",
                           (ROOT / "deploy" / "Containerfile").read_text(), re.M)
    assert image_user is not None
    for workload in workloads(overlay(name)):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == image_user.group(1) != "0"
        for box in pod["containers"] + pod.get("initContainers", []):
            assert box.get("securityContext", {}).get("runAsUser", 1) != 0
            assert box["securityContext"]["allowPrivilegeEscalation"] is False
            assert box["securityContext"]["capabilities"]["drop"] == ["ALL"]


def _named_image(name: str) -> str:
    """The image an overlay's kustomization (or the one it builds on) names for "zeroserve"."""
    folder = KUSTOMIZE / "overlays" / name
    while True:
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        for image in kustomization.get("images", []):
            if image["name"] == "zeroserve":
                return f"{image['newName']}:{image['newTag']}"
        [parent] = [r for r in kustomization["resources"] if r.startswith("..")]
        folder = (folder / parent).resolve()


@pytest.mark.parametrize("name", OVERLAYS)
def test_one_image_runs_every_role_the_one_the_overlay_names(name: str):
    images = {box["image"] for w in workloads(overlay(name))
              for box in w["spec"]["template"]["spec"]["containers"]}
    assert images == {_named_image(name)}
    assert {box["image"] for w in workloads(render("base"))
            for box in w["spec"]["template"]["spec"]["containers"]} == {"zeroserve"}


@pytest.mark.parametrize("name", OVERLAYS)
def test_no_pod_gets_service_variables_that_read_as_settings(name: str):
    # a Service zeroserve-broker-metrics would give every pod ZEROSERVE_BROKER_METRICS_PORT=
    # tcp://..., which the daemons read as the setting broker.metrics_port (and refuse)
    for workload in workloads(overlay(name)):
        assert workload["spec"]["template"]["spec"]["enableServiceLinks"] is False


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_zeroserve_variable_is_a_setting_of_the_right_type(name: str):
    known = {env_name(f"{section}.{key}")
             for section, make in SECTIONS.items()
             for key in (f.name for f in dataclasses.fields(make()))}
    objects = overlay(name)
    [config_map] = of_kind(objects, "ConfigMap")
    variables = dict(config_map["data"])
    for workload in workloads(objects):
        variables.update(environment(objects, container(workload)))
    named_here = {v for v in variables if v.startswith("ZEROSERVE_")}
    assert named_here and named_here <= known, named_here - known
    load_settings(environ=config_map["data"])  # raises ConfigError for a value of a wrong type


@pytest.mark.parametrize("name", OVERLAYS)
def test_workers_drain_within_their_termination_grace_period(name: str):
    objects = overlay(name)
    for worker in (w for w in workloads(objects) if component(w) == "worker"):
        drain = daemon_settings(objects, worker).worker.drain_timeout_s
        grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > drain, f"the kubelet kills a worker {grace} s into a {drain} s drain"
        strategy = worker["spec"]["strategy"]["rollingUpdate"]
        assert strategy["maxUnavailable"] == 0
        assert container(worker)["resources"]["requests"]
        assert container(worker)["resources"]["limits"]


# ---------------------------------------------------------------- network policies


def _policy_for(objects: tuple[dict, ...], workload: dict) -> dict:
    [policy] = [p for p in of_kind(objects, "NetworkPolicy")
                if selects(p["spec"]["podSelector"]["matchLabels"], workload)]
    return policy


def _allowed(objects: tuple[dict, ...], target: dict, port: int) -> set[str]:
    """The roles whose pods may open ``port`` of ``target``'s pods ("*": anyone)."""
    roles: set[str] = set()
    for rule in _policy_for(objects, target)["spec"].get("ingress", []):
        if not any(p["port"] <= port <= p.get("endPort", p["port"]) for p in rule["ports"]):
            continue
        if "from" not in rule:
            return {"*"}
        for peer in rule["from"]:
            roles.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"])
    return roles


@pytest.mark.parametrize("name", OVERLAYS)
def test_network_policies_let_in_only_the_daemons_that_need_each_port(name: str):
    objects = overlay(name)
    broker = only_workload(objects, "broker")
    ports = ports_of(container(broker))
    assert _allowed(objects, broker, ports["frontend"]) == {"gateway", "worker"}
    assert _allowed(objects, broker, ports["backend"]) == {"worker"}
    assert _allowed(objects, broker, ports["metrics"]) == {"*"}
    gateway = only_workload(objects, "gateway")
    for port in ports_of(container(gateway)).values():
        assert _allowed(objects, gateway, port) == {"*"}
    for worker in (w for w in workloads(objects) if component(w) == "worker"):
        sysctls = {s["name"]: s["value"]
                   for s in worker["spec"]["template"]["spec"]["securityContext"]["sysctls"]}
        low, high = map(int, sysctls["net.ipv4.ip_local_port_range"].split())
        assert _allowed(objects, worker, low) == _allowed(objects, worker, high) == {"broker"}
        assert _allowed(objects, worker, low - 1) == _allowed(objects, worker, high + 1) == set()


# ---------------------------------------------------------------- overlays


def test_dev_runs_one_of_each():
    objects = overlay("dev")
    assert sorted((component(w), w["spec"]["replicas"]) for w in workloads(objects)) == \
        [("broker", 1), ("gateway", 1), ("worker", 1)]
    assert not of_kind(objects, "HorizontalPodAutoscaler")


@pytest.mark.parametrize("name", ("production", "gpu"))
def test_production_scales_gateways_on_cpu_and_workers_on_the_broker_queue(name: str):
    objects = overlay(name)
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h["spec"]
            for h in of_kind(objects, "HorizontalPodAutoscaler")}
    gateway = only_workload(objects, "gateway")
    assert hpas[gateway["metadata"]["name"]]["minReplicas"] == 3
    for workload in (gateway, *(w for w in workloads(objects) if component(w) == "worker")):
        assert "replicas" not in workload["spec"], "kubectl apply would undo the autoscaler"
    broker_metrics = (ROOT / "broker" / "metrics.py").read_text()
    for worker in (w for w in workloads(objects) if component(w) == "worker"):
        spec = hpas[worker["metadata"]["name"]]
        [metric] = spec["metrics"]
        assert metric["type"] == "External"
        assert metric["external"]["metric"]["name"] == "zeroserve_broker_queue_depth"
        assert '"zeroserve_broker_queue_depth"' in broker_metrics
        service = worker["spec"]["template"]["metadata"]["labels"]["zeroserve.io/service"]
        assert metric["external"]["metric"]["selector"]["matchLabels"] == {"service": service}
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]


@pytest.mark.parametrize("name", ("production", "gpu", "keda"))
def test_production_has_disruption_budgets_for_gateways_and_every_worker(name: str):
    objects = overlay(name)
    budgets = of_kind(objects, "PodDisruptionBudget")
    for workload in workloads(objects):
        covered = [b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], workload)]
        if component(workload) == "broker":
            assert not covered, "a budget on the one broker pod would block every node drain"
        else:
            assert len(covered) == 1 and covered[0]["spec"]["maxUnavailable"] == 1


def _secret_file(objects: tuple[dict, ...], workload: dict, path: str) -> str:
    """The Secret (and key) that the container finds at ``path``."""
    pod = workload["spec"]["template"]["spec"]
    for mount in container(workload)["volumeMounts"]:
        inside = posixpath.relpath(path, mount["mountPath"])
        if inside.startswith(".."):
            continue
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        for item in volume.get("secret", {}).get("items", []):
            if item["path"] == inside:
                return f"{volume['secret']['secretName']}/{item['key']}"
    raise AssertionError(f"{workload['metadata']['name']}: nothing mounted at {path}")


@pytest.mark.parametrize("name", ("production", "gpu", "keda"))
def test_production_turns_curve_and_api_keys_on_with_keys_from_secrets(name: str):
    objects = overlay(name)
    broker = only_workload(objects, "broker")
    curve = daemon_settings(objects, broker).curve
    assert curve.enabled
    assert _secret_file(objects, broker, curve.secret_key_file) == \
        "zeroserve-curve-broker/broker.key_secret"
    for role in ("gateway", "worker"):
        assert _secret_file(objects, broker, f"{curve.allowed_keys_dir}/{role}/{role}.key") == \
            f"zeroserve-curve-broker/{role}.key"
    peers = [w for w in workloads(objects) if component(w) in ("gateway", "worker")]
    for peer in peers:
        role, settings = component(peer), daemon_settings(objects, peer)
        assert settings.curve.enabled
        assert _secret_file(objects, peer, settings.curve.secret_key_file) == \
            f"zeroserve-curve-{role}/{role}.key_secret"
        assert _secret_file(objects, peer, settings.curve.broker_key_file) == \
            f"zeroserve-curve-{role}/broker.key"
    gateway = only_workload(objects, "gateway")
    keys_file = daemon_settings(objects, gateway).gateway.api_keys_file
    assert _secret_file(objects, gateway, keys_file) == "zeroserve-api-keys/keys.yaml"


def test_the_gpu_overlay_gives_each_worker_whole_gpus():
    for worker in (w for w in workloads(overlay("gpu")) if component(w) == "worker"):
        resources = container(worker)["resources"]
        gpus = resources["limits"]["nvidia.com/gpu"]
        assert isinstance(gpus, int) and gpus >= 1
        assert resources["requests"]["nvidia.com/gpu"] == gpus
    for name in ("dev", "production"):
        rendered = yaml.safe_dump_all(overlay(name))
        assert "nvidia.com/gpu" not in rendered


def test_keda_scaled_object_scales_each_worker_deployment_on_its_queue_depth():
    objects = overlay("keda")
    scaled = of_kind(objects, "ScaledObject")
    workers = {w["metadata"]["name"]: w for w in workloads(objects) if component(w) == "worker"}
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == set(workers)
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"]
                   for h in of_kind(objects, "HorizontalPodAutoscaler")}
    assert not hpa_targets & set(workers), "KEDA makes its own HPA; two would fight"
    for obj in scaled:
        spec: dict[str, Any] = obj["spec"]
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        assert set(spec) <= KEDA_SPEC_FIELDS, set(spec) - KEDA_SPEC_FIELDS
        target = spec["scaleTargetRef"]
        assert (target.get("apiVersion", "apps/v1"), target.get("kind", "Deployment")) == \
            ("apps/v1", "Deployment")
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert isinstance(spec["pollingInterval"], int) and spec["pollingInterval"] > 0
        service = workers[target["name"]]["spec"]["template"]["metadata"]["labels"][
            "zeroserve.io/service"]
        [trigger] = spec["triggers"]
        assert trigger["type"] == "prometheus"
        meta = trigger["metadata"]
        assert urllib.parse.urlsplit(meta["serverAddress"]).scheme in ("http", "https")
        assert f'zeroserve_broker_queue_depth{{service="{service}"}}' in meta["query"], \
            meta["query"]
        assert isinstance(meta["threshold"], str) and float(meta["threshold"]) > 0
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 30


# ---------------------------------------------------------------- the image's HEALTHCHECK


def test_the_image_healthcheck_reads_the_flags_the_daemons_define():
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "deploy" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    asked = {"gateway": ("--config", "--http-port", "--host", "--tls-cert"),
             "serve": ("--config", "--http-port", "--host", "--tls-cert"),
             "broker": ("--config", "--frontend")}
    every_flag: set[str] = set()
    for name, flags in asked.items():
        options = {flag: p.name for p in zeroserve_command.commands[name].params
                   for flag in p.opts}
        every_flag |= set(options)
        for flag in flags:
            setting = healthcheck.FLAGS[flag]
            assert options[flag] == ("config_file" if setting == "config"
                                     else setting.replace(".", "__")), (name, flag)
    assert set(healthcheck.FLAGS) <= every_flag
    settings = healthcheck.settings_of(["gateway", "--frontend", "tcp://broker:1",
                                        "--http-port=9000", "--host", "127.0.0.2"])
    assert (settings.gateway.http_port, settings.gateway.http_host) == (9000, "127.0.0.2")
    assert healthcheck.settings_of(["broker", "--frontend", "tcp://0.0.0.0:7000"]) \
        .broker.frontend == "tcp://0.0.0.0:7000"
