"""``scripts/image manifests DEPLOYMENT.yaml``: the overlay it writes for examples/deployment.yaml
and examples/pipeline.yaml renders with ``kubectl kustomize``, every object validates against the
Kubernetes 1.32 schemas, and it runs exactly the file's services, each as the file says (replicas,
flags, CPUs, whole GPUs, version, settings) with the base's conventions (broker addresses,
network policies, budgets, drain). Files Kubernetes cannot run are refused with key and line.

The daemons' settings are read as in test_manifests: their args through the real click commands,
their environment through ``zeroserve.config.load_settings``.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from test_manifests import (
    KUBERNETES_VERSION,
    POD_IP,
    _allowed,
    _secret_file,
    _service_for,
    component,
    container,
    daemon_settings,
    of_kind,
    ports_of,
    selects,
    workloads,
)

from zeroserve.config import SECTIONS, Settings, env_name
from zeroserve.deployment import (
    Deployment,
    DeploymentError,
    ServiceDeployment,
    load_deployment,
    parse_deployment,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from image_lib.engine import ImageError  # noqa: E402
from image_lib.kubernetes_checks import PINNED, check_for_kubernetes  # noqa: E402
from image_lib.layer import LAYERS  # noqa: E402
from image_lib.manifests import write_overlay  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "image"
EXAMPLES = ("deployment.yaml", "pipeline.yaml")
BASE_EXAMPLE_WORKER = "zeroserve-worker-mlp"
GPU_FILE = """\
services:
  big:
    target: models/big.py:Big
    workers: 3
    resources: {gpus: 2, cpus: 0.5}
  small:
    target: models.small:Small
"""


def image_command(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``scripts/image ARGS`` with this interpreter (it has zeroserve's dependencies)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], text=True,
                          capture_output=True, cwd=cwd, env=env, timeout=60)


def kustomize(folder: Path) -> tuple[dict, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with kustomize v5) is needed to render the overlays")
    done = subprocess.run([kubectl, "kustomize", str(folder)], text=True, capture_output=True,
                          timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {folder}: {done.stderr}"
    return tuple(obj for obj in yaml.safe_load_all(done.stdout) if obj)


def generate(source: Path, out: Path, image: str = "localhost/zeroserve:latest",
             on: str = "base") -> None:
    """What ``scripts/image manifests SOURCE --out OUT --image IMAGE --on ON`` does, in this
    process."""
    text = source.read_text()
    deployment = parse_deployment(text, str(source))
    check_for_kubernetes(deployment, text)
    write_overlay(deployment, source, out, image, LAYERS[on])


@functools.cache
def _generated(source: str, out: str, image: str, on: str) -> tuple[dict, ...]:
    generate(Path(source), Path(out), image, on)
    return kustomize(Path(out))


@pytest.fixture(scope="module")
def overlays(tmp_path_factory: pytest.TempPathFactory):
    """``generate(file)``: the rendered overlay of a deployment file (made once per file)."""
    folder = tmp_path_factory.mktemp("overlays")

    def generate(source: Path, image: str = "localhost/zeroserve:latest",
                 on: str = "base") -> tuple[dict, ...]:
        out = folder / f"{source.stem}-{on}-{len(image)}"
        return _generated(str(source), str(out), image, on)

    return generate


@pytest.fixture(scope="module")
def gpu_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gpu") / "gpus.yaml"
    path.write_text(GPU_FILE)
    return path


def workers_of(objects: tuple[dict, ...]) -> dict[str, dict]:
    """The worker Deployments by the service they serve."""
    return {w["spec"]["template"]["metadata"]["labels"]["zeroserve.io/service"]: w
            for w in workloads(objects) if component(w) == "worker"}


def services_of(name: str) -> tuple[ServiceDeployment, ...]:
    return load_deployment(ROOT / "examples" / name).services


def defaults() -> Settings:
    return Settings(**{name: make() for name, make in SECTIONS.items()})


# ---------------------------------------------------------------- schemas and the services


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_object_of_a_generated_overlay_validates_against_the_kubernetes_schemas(
        overlays, name: str):
    objects = overlays(ROOT / "examples" / name)
    assert {obj["kind"] for obj in objects} >= {"StatefulSet", "Deployment", "Service",
                                                "ConfigMap", "NetworkPolicy",
                                                "PodDisruptionBudget"}
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", EXAMPLES)
def test_one_worker_deployment_per_service_with_its_replicas_flags_target_and_version(
        overlays, name: str):
    objects = overlays(ROOT / "examples" / name)
    services = services_of(name)
    workers = workers_of(objects)
    assert sorted(workers) == sorted(s.name for s in services)
    fallback = defaults().worker
    for service in services:
        worker = workers[service.name]
        assert worker["metadata"]["name"] == "zeroserve-worker-" + service.name.replace("_", "-")
        assert worker["spec"]["replicas"] == service.workers
        settings = daemon_settings(objects, worker).worker
        assert settings.slots == (service.slots or fallback.slots)
        assert settings.threads == (service.threads or fallback.threads)
        assert settings.job_slots == (fallback.job_slots if service.job_slots is None
                                      else service.job_slots)
        relative = Path(service.target.partition(":")[0]).relative_to(ROOT / "examples")
        cls = service.target.partition(":")[2]
        assert container(worker)["args"][1] == f"/srv/service/{relative}" + \
            (f":{cls}" if cls else "")
        labels = worker["spec"]["template"]["metadata"]["labels"]
        assert labels["zeroserve.io/version"] == str(service.version)
        args = container(worker)["args"]
        assert (args[args.index("--service-version") + 1] if "--service-version" in args
                else "1") == str(service.version)
        assert worker["metadata"]["labels"]["zeroserve.io/version"] == str(service.version)
        assert "zeroserve.io/version" not in worker["spec"]["selector"]["matchLabels"], \
            "a selector cannot change: a new version would need the Deployment deleted"
        assert selects(worker["spec"]["selector"]["matchLabels"], worker)


def test_the_base_example_worker_is_replaced_so_only_the_files_services_run(overlays):
    pipeline = overlays(ROOT / "examples" / "pipeline.yaml")
    names = {w["metadata"]["name"] for w in workloads(pipeline)}
    assert BASE_EXAMPLE_WORKER not in names
    assert names == {"zeroserve-broker", "zeroserve-gateway", "zeroserve-worker-tokenizer",
                     "zeroserve-worker-embedder", "zeroserve-worker-ranker"}
    # examples/deployment.yaml serves mlp too: its one Deployment is the file's, not the base's
    mlp = workers_of(overlays(ROOT / "examples" / "deployment.yaml"))["mlp"]
    assert mlp["metadata"]["name"] == BASE_EXAMPLE_WORKER
    assert container(mlp)["args"][:2] == ["worker", "/srv/service/mlp.py"]
    assert "--slots" in container(mlp)["args"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_workers_reach_the_broker_frontend_and_backend_through_its_services(
        overlays, name: str):
    objects = overlays(ROOT / "examples" / name)
    broker = next(w for w in workloads(objects) if component(w) == "broker")
    broker_ports = ports_of(container(broker))
    for worker in workers_of(objects).values():
        settings = daemon_settings(objects, worker).worker
        assert _service_for(objects, settings.frontend, broker) == broker_ports["frontend"]
        assert _service_for(objects, settings.backend, broker) == broker_ports["backend"]
        assert settings.job_host == POD_IP, "the lane must announce the pod's address"


def test_cpus_become_requests_and_limits_and_gpus_whole_nvidia_gpus(overlays, gpu_file: Path):
    gpu_sim = workers_of(overlays(ROOT / "examples" / "deployment.yaml"))["gpu_sim"]
    resources = container(gpu_sim)["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == "1"
    assert "nvidia.com/gpu" not in resources["limits"]

    objects = overlays(gpu_file)
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    workers = workers_of(objects)
    big = workers["big"]
    resources = container(big)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 2
    assert isinstance(resources["limits"]["nvidia.com/gpu"], int)
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == "500m"
    assert big["spec"]["replicas"] == 3
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        big["spec"]["template"]["spec"]["tolerations"]
    assert container(big)["args"][1] == "/srv/service/models/big.py:Big"
    small = workers["small"]
    assert "nvidia.com/gpu" not in yaml.safe_dump(small)
    assert container(small)["args"][1] == "models.small:Small"
    assert container(small)["resources"]["requests"]["cpu"], "the base's requests stay"


# ---------------------------------------------------------------- settings


def _known_variables() -> set[str]:
    return {env_name(f"{section}.{key}") for section, make in SECTIONS.items()
            for key in (f.name for f in dataclasses.fields(make()))}


@pytest.mark.parametrize("name", EXAMPLES)
def test_settings_and_batching_limits_reach_every_daemon_as_settings_of_config(
        overlays, name: str):
    objects = overlays(ROOT / "examples" / name)
    deployment: Deployment = load_deployment(ROOT / "examples" / name)
    [config_map] = of_kind(objects, "ConfigMap")
    variables = set(config_map["data"])
    assert {v for v in variables if v.startswith("ZEROSERVE_")} <= _known_variables()
    batching = deployment.batching_overrides()
    assert batching, "both examples give batching limits"
    for workload in workloads(objects):
        settings = daemon_settings(objects, workload)
        assert settings.batching.overrides == batching  # the broker batches
        for section, values in deployment.settings.items():
            for key, value in values.items():
                assert getattr(getattr(settings, section), key) == value
    assert config_map["data"]["ZEROSERVE_CLUSTER_NAME"] == "zeroserve", "the base's stay"


# ---------------------------------------------------------------- the base's conventions


@pytest.mark.parametrize("name", EXAMPLES)
def test_policies_budgets_and_drain_cover_every_generated_worker(overlays, name: str):
    objects = overlays(ROOT / "examples" / name)
    broker = next(w for w in workloads(objects) if component(w) == "broker")
    assert _allowed(objects, broker, ports_of(container(broker))["frontend"]) == \
        {"gateway", "worker"}
    budgets = of_kind(objects, "PodDisruptionBudget")
    for worker in workers_of(objects).values():
        low, high = 32768, 60999  # the base's job-lane range, opened to the broker only
        assert _allowed(objects, worker, low) == _allowed(objects, worker, high) == {"broker"}
        covered = [b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], worker)]
        assert [b["spec"]["maxUnavailable"] for b in covered] == [1]
        drain = daemon_settings(objects, worker).worker.drain_timeout_s
        pod = worker["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > drain
        assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["enableServiceLinks"] is False


def test_the_image_option_names_the_image_of_every_container(overlays):
    image = "registry.example.com:5000/team/pipeline:1.2"
    objects = overlays(ROOT / "examples" / "pipeline.yaml", image)
    assert {box["image"] for w in workloads(objects)
            for box in w["spec"]["template"]["spec"]["containers"]} == {image}


# ---------------------------------------------------------------- on dev and production


def test_on_dev_each_service_keeps_its_own_worker_count(overlays):
    objects = overlays(ROOT / "examples" / "pipeline.yaml", on="dev")
    workers = workers_of(objects)
    assert {name: w["spec"]["replicas"] for name, w in workers.items()} == \
        {s.name: s.workers for s in services_of("pipeline.yaml")}
    assert BASE_EXAMPLE_WORKER not in {w["metadata"]["name"] for w in workloads(objects)}
    assert {component(w): w["spec"].get("replicas") for w in workloads(objects)
            if component(w) != "worker"} == {"broker": 1, "gateway": 1}


def test_on_production_every_service_has_curve_keys_an_autoscaler_and_a_budget(overlays):
    image = "registry.example.com/team/pipeline:1.2"
    objects = overlays(ROOT / "examples" / "pipeline.yaml", image, on="production")
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert {box["image"] for w in workloads(objects)
            for box in w["spec"]["template"]["spec"]["containers"]} == {image}
    workers = workers_of(objects)
    services = {s.name: s for s in services_of("pipeline.yaml")}
    assert sorted(workers) == sorted(services)
    scalers = {h["spec"]["scaleTargetRef"]["name"]: h["spec"]
               for h in of_kind(objects, "HorizontalPodAutoscaler")}
    assert BASE_EXAMPLE_WORKER not in scalers
    assert BASE_EXAMPLE_WORKER not in {b["metadata"]["name"]
                                       for b in of_kind(objects, "PodDisruptionBudget")}
    for name, worker in workers.items():
        settings = daemon_settings(objects, worker)
        assert settings.curve.enabled
        assert _secret_file(objects, worker, settings.curve.secret_key_file) == \
            "zeroserve-curve-worker/worker.key_secret"
        assert _secret_file(objects, worker, settings.curve.broker_key_file) == \
            "zeroserve-curve-worker/broker.key"
        assert "replicas" not in worker["spec"], "kubectl apply would undo the autoscaler"
        spec = scalers[worker["metadata"]["name"]]
        assert spec["minReplicas"] == services[name].workers <= spec["maxReplicas"]
        [metric] = spec["metrics"]
        assert metric["external"]["metric"]["name"] == "zeroserve_broker_queue_depth"
        assert metric["external"]["metric"]["selector"]["matchLabels"] == {"service": name}
        assert settings.batching.overrides == {"embedder.embed": {"max_batch_size": 256,
                                                                   "max_latency_ms": 2.0}}


# ---------------------------------------------------------------- refusals


def test_a_fractional_gpu_is_refused_with_its_key_and_line(tmp_path: Path):
    source = tmp_path / "shared.yaml"
    source.write_text("services:\n  mlp:\n    target: mlp.py\n    resources:\n"
                      "      gpus: 0.5\n")
    done = image_command("manifests", str(source), "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert f"{source}:5: services.mlp.resources.gpus: 0.5 is a share of one device" in \
        done.stderr
    assert "whole GPUs" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_bad_file_is_refused_with_every_problem_by_key_and_line(tmp_path: Path):
    source = tmp_path / "bad.yaml"
    source.write_text("services:\n  mlp:\n    target: mlp.py\n    workers: -1\n"
                      "  up:\n    target: ../up.py:Up\nsettings:\n  broker:\n"
                      "    metrics_port: 9\n  colour: {red: 1}\n")
    done = image_command("manifests", str(source), "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert f"{source}:4: services.mlp.workers: must be 0 or more, not -1" in done.stderr
    assert f"{source}:10: colour" in done.stderr or f"{source}:10: settings.colour" in \
        done.stderr
    assert not (tmp_path / "out").exists()
    # once the file's own problems are fixed, what Kubernetes cannot run is named the same way
    source.write_text(source.read_text().replace("-1", "1").replace("  colour: {red: 1}\n", ""))
    with pytest.raises(DeploymentError) as refused:
        generate(source, tmp_path / "out")
    assert refused.value.problems == [
        f"{source}:6: services.up.target: ../up.py:Up is outside the deployment file's folder; "
        "the image holds that folder at /srv/service (scripts/image build --service)",
        f"{source}:9: settings.broker.metrics_port: the manifests set this one (the broker's "
        "Services, the probes' ports and the job store's volume depend on it)"]
    assert not (tmp_path / "out").exists()


def test_an_earlier_overlay_is_replaced_and_a_folder_it_did_not_make_is_refused(
        tmp_path: Path, gpu_file: Path):
    out = tmp_path / "out"
    generate(gpu_file, out)
    assert (out / "worker-big.yaml").is_file()
    done = image_command("manifests", str(ROOT / "examples" / "pipeline.yaml"), "--out",
                         str(out))
    assert done.returncode == 0, done.stderr
    assert not (out / "worker-big.yaml").exists()
    assert set(workers_of(kustomize(out))) == {"tokenizer", "embedder", "ranker"}
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ImageError, match="did not make it"):
        generate(gpu_file, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_the_settings_the_manifests_fix_are_settings_of_config():
    known = {f"{section}.{f.name}" for section, make in SECTIONS.items()
             for f in dataclasses.fields(make())}
    assert PINNED <= known, PINNED - known


def test_a_service_at_another_version_runs_its_workers_with_that_version(overlays, tmp_path):
    source = tmp_path / "versioned.yaml"
    source.write_text(f"services:\n  mlp:\n    target: {ROOT / 'examples' / 'mlp.py'}\n"
                      "    version: 3\n")
    args = container(workers_of(overlays(source))["mlp"])["args"]
    assert args[args.index("--service-version") + 1] == "3"
