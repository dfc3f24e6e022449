"""Many services from one `zeroserve serve`: services named on the command line, a deployment
file (its per-service workers, flags and batching, shown by `zeroserve status`), a bad file
refused before anything starts, and GPUs given to each worker from a device list."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cluster import EXAMPLES, FAST_ENV, ROOT, free_port
from reference_models import mlp, sample_input

import zeroserve

pytestmark = pytest.mark.integration

DEVICES = ROOT / "tests" / "deploy_services.py"


class Served:
    """One `zeroserve serve` run on free ports, with its log; ``stop`` ends it and its
    children whatever happened."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.http, self.frontend = free_port(), free_port()
        self.log_path = tmp_path / f"serve-{self.http}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zeroserve", "serve", *args,
             "--http-port", str(self.http), "--grpc-port", "0", "--host", "127.0.0.1",
             "--metrics-port", "0", "--frontend", f"tcp://127.0.0.1:{self.frontend}",
             "--backend", f"tcp://127.0.0.1:{free_port()}",
             "--job-store", str(tmp_path / f"jobs-{self.http}.sqlite3")],
            stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT, cwd=str(ROOT),
            env={**os.environ, **FAST_ENV, **(env or {})})

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout_s: float = 90.0) -> zeroserve.Client:
        deadline = time.monotonic() + timeout_s
        while "serve: ready" not in self.log:
            assert self.proc.poll() is None, self.log
            assert time.monotonic() < deadline, f"serve never became ready:\n{self.log}"
            time.sleep(0.2)
        return zeroserve.Client(f"http://127.0.0.1:{self.http}")

    def status(self) -> dict:
        done = subprocess.run([sys.executable, "-m", "zeroserve", "status", "--json",
                               "--frontend", f"tcp://127.0.0.1:{self.frontend}"],
                              capture_output=True, text=True, cwd=str(ROOT), timeout=30)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def table(self) -> str:
        done = subprocess.run([sys.executable, "-m", "zeroserve", "status", "--once",
                               "--frontend", f"tcp://127.0.0.1:{self.frontend}"],
                              capture_output=True, text=True, cwd=str(ROOT), timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    runs: list[Served] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Served:
        runs.append(Served(tmp_path, *args, env=env))
        return runs[-1]

    try:
        yield start
    finally:
        for run in runs:
            run.stop()


def _workers_by_service(stats: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for worker in stats["workers"]:
        counts[worker["service"]] = counts.get(worker["service"], 0) + 1
    return counts


def test_two_services_named_on_the_command_line_both_answer(serve) -> None:
    run = serve(str(EXAMPLES / "mlp.py"), f"{EXAMPLES / 'text.py'}:Text", "--workers", "1")
    client = run.wait_ready()
    x = sample_input(2)
    np.testing.assert_allclose(client.call("mlp", "predict", x=x), mlp(x), rtol=1e-5)
    assert client.call("text", "reverse", text="abc") == "cba"
    assert _workers_by_service(run.status()) == {"mlp": 1, "text": 1}


def test_a_deployment_file_serves_each_service_with_its_workers_and_batching(
        serve) -> None:
    run = serve(str(EXAMPLES / "deployment.yaml"))
    client = run.wait_ready()
    x = sample_input(1)
    np.testing.assert_allclose(client.call("mlp", "predict", x=x), mlp(x), rtol=1e-5)
    assert client.call("gpu_sim", "predict", x=np.zeros((3, 64), np.float32)).shape == (3, 10)
    deadline = time.monotonic() + 10
    while _workers_by_service(stats := run.status()) != {"mlp": 2, "gpu_sim": 1}:
        assert time.monotonic() < deadline, stats["workers"]
        time.sleep(0.2)
    slots = {w["service"]: w["slots"] for w in stats["workers"]}
    assert slots == {"mlp": 2, "gpu_sim": 4}  # each service's own `slots`
    predict = stats["endpoints"]["gpu_sim.predict"]
    assert (predict["max_batch_size"], predict["max_latency_ms"]) == (32, 5.0)  # the file's
    # a worker that missed its heartbeats on a loaded machine joins again under a new identity
    # and is counted twice until its old one is evicted (CI saw gpu_sim 2 8): read until settled
    deadline = time.monotonic() + 10
    while True:
        services = run.table().split("\n\n")[1].splitlines()
        rows = [row.split()[:3] for row in services[2:4]]
        if rows == [["gpu_sim", "1", "4"], ["mlp", "2", "4"]] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert services[0].split()[:2] == ["service", "workers"]
    assert rows == [["gpu_sim", "1", "4"], ["mlp", "2", "4"]], services


def test_a_bad_deployment_file_is_refused_naming_key_and_line_and_starts_nothing(
        serve, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"services:\n  mlp:\n    target: {EXAMPLES / 'mlp.py'}\n    workers: -2\n"
                   "  text:\n    workers: 1\n")
    run = serve(str(bad))
    assert run.proc.wait(60) == 2
    assert f"{bad}:4: services.mlp.workers: must be 0 or more, not -2" in run.log
    assert f"{bad}:5: services.text.target: missing" in run.log
    assert "serve: started" not in run.log


def test_an_entry_not_named_as_its_service_is_refused_before_anything_starts(
        serve, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(f"services:\n  model:\n    target: {EXAMPLES / 'mlp.py'}\n")
    run = serve(str(wrong))
    assert run.proc.wait(60) == 2
    assert "services.model: " in run.log and "name the entry 'mlp'" in run.log
    assert "serve: started" not in run.log


def test_each_gpu_worker_sees_only_its_own_device(serve, tmp_path: Path) -> None:
    file = tmp_path / "gpus.yaml"
    file.write_text(f"services:\n  devices:\n    target: {DEVICES}\n    workers: 2\n"
                    "    resources: {gpus: 1}\n")
    run = serve(str(file), "--gpus", "0,1", env={"CUDA_VISIBLE_DEVICES": "7"})
    client = run.wait_ready()
    deadline = time.monotonic() + 20
    while _workers_by_service(run.status()) != {"devices": 2}:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    seen: dict[int, str] = {}  # worker pid -> what it sees
    while len(seen) < 2:
        assert time.monotonic() < deadline, seen
        answer = client.call("devices", "worker")
        seen[answer["pid"]] = answer["devices"]
    assert client.call("devices", "visible") in ("0", "1")
    assert sorted(seen.values()) == ["0", "1"]  # not the "7" that serve itself was given
    reported = sorted(w["info"]["devices"] for w in run.status()["workers"])
    assert reported == ["0", "1"]  # each worker told the broker its devices at READY
    assert "worker-1 has CUDA_VISIBLE_DEVICES='0'" in run.log


def test_too_few_gpus_are_refused_before_anything_starts(serve, tmp_path: Path) -> None:
    file = tmp_path / "gpus.yaml"
    file.write_text(f"services:\n  devices:\n    target: {DEVICES}\n    workers: 2\n"
                    "    resources: {gpus: 1}\n")
    run = serve(str(file), "--gpus", "0")
    assert run.proc.wait(60) == 2
    assert "not enough GPUs: 2 worker(s) ask for 2 in all" in run.log
    assert "serve: started" not in run.log


def test_workers_flag_with_a_deployment_file_is_refused(serve) -> None:
    run = serve(str(EXAMPLES / "deployment.yaml"), "--workers", "3")
    assert run.proc.wait(60) == 2
    assert "--workers does not apply to a deployment file" in run.log


def _fleet_workers(fleet, service: str) -> int:
    return len(list(fleet.run_dir.glob(f"worker-{service}-*.pid")))


def test_cluster_script_runs_a_deployment_and_scales_one_service_under_load(
        tmp_path: Path) -> None:
    from script_fleet import ScriptFleet
    from steady_load import SteadyLoad

    file = tmp_path / "fleet.yaml"
    file.write_text(f"""\
services:
  mlp: {{target: {EXAMPLES / 'mlp.py'}, workers: 1, slots: 3}}
  devices:
    target: {DEVICES}
    workers: 2
    resources: {{gpus: 1}}
""")
    fleet = ScriptFleet(tmp_path / "run")
    try:
        out = fleet.up(str(file), "--gpus", "0,1")
        assert "serving mlp (1), devices (2)" in out, out
        assert "worker-devices-1 pid" in out and "CUDA_VISIBLE_DEVICES='0'" in out
        assert "CUDA_VISIBLE_DEVICES='1'" in out and "worker-mlp-1" in out
        client = zeroserve.Client(fleet.url)
        seen = {}
        deadline = time.monotonic() + 20
        while len(seen) < 2:
            assert time.monotonic() < deadline, seen
            answer = client.call("devices", "worker")
            seen[answer["pid"]] = answer["devices"]
        assert sorted(seen.values()) == ["0", "1"]
        refused = fleet.command("cluster", "scale", "workers", "3", "--service", "devices")
        assert refused.returncode == 1 and "not enough GPUs" in refused.stderr
        assert fleet.command("cluster", "scale", "workers", "2").returncode == 1  # which?
        load = SteadyLoad([fleet.url], "mlp", "predict", threads=4,
                          inputs={"x": np.zeros((1, 64), np.float32)}).start()
        try:
            time.sleep(1.0)
            fleet.run("scale", "workers", "3", "--service", "mlp")
            assert _fleet_workers(fleet, "mlp") == 3 and _fleet_workers(fleet, "devices") == 2
            status = fleet.run("status")
            assert "service mlp (version 1" in status and "): 3 worker(s)" in status
            assert "service devices (version 1" in status and "): 2 worker(s)" in status
            assert status.count("GPUs 0") == 1 and status.count("GPUs none") == 3, status
            time.sleep(1.0)
            out = fleet.run("scale", "workers", "1", "--service", "mlp")
            assert out.count("stopped") == 2 and "killed" not in out
        finally:
            tally = load.stop()
        assert tally.succeeded > 50
        assert sum(tally.failed.values()) == 0 and tally.hung == 0, tally.line("scale mlp")
        assert _fleet_workers(fleet, "mlp") == 1 and _fleet_workers(fleet, "devices") == 2
    finally:
        fleet.run("down", check=False)
    assert not list((tmp_path / "run").glob("*.pid"))


def test_a_worker_of_a_file_with_several_services_is_refused_with_their_names() -> None:
    done = subprocess.run([sys.executable, "-m", "zeroserve", "worker",
                           str(ROOT / "tests" / "services.py"), "--backend",
                           f"tcp://127.0.0.1:{free_port()}"], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=60)
    assert done.returncode == 2
    assert "defines 8 services; name one:" in done.stderr and "services.py:Probe" in done.stderr


def test_autoscale_keeps_one_service_of_a_deployment_within_its_own_bounds(
        tmp_path: Path) -> None:
    from script_fleet import ScriptFleet

    file = tmp_path / "fleet.yaml"
    file.write_text(f"services:\n  mlp: {{target: {EXAMPLES / 'mlp.py'}, workers: 1}}\n"
                    f"  text: {{target: {EXAMPLES / 'text.py'}, workers: 1}}\n")
    fleet = ScriptFleet(tmp_path / "run")
    scaler = None
    try:
        fleet.up(str(file))
        which = fleet.command("autoscale", "--interval", "0.2", timeout=30)
        assert which.returncode == 1 and "serves mlp, text: say which with --service" in \
            which.stderr
        scaler = fleet.autoscale("--service", "text", "--min", "2", "--max", "3",
                                 "--interval", "0.2")
        deadline = time.monotonic() + 30
        while _fleet_workers(fleet, "text") < 2:
            assert time.monotonic() < deadline and scaler.poll() is None
            time.sleep(0.2)
        assert _fleet_workers(fleet, "mlp") == 1  # the other service is left alone
    finally:
        if scaler is not None:
            scaler.terminate()
            log, _ = scaler.communicate(timeout=30)
        fleet.run("down", check=False)
    assert "1 -> 2 workers (below the minimum of 2)" in log
