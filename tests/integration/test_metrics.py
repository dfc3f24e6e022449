"""Prometheus metrics of a real gateway and broker, parsed with prometheus_client's parser."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

import numpy as np
import pytest
from cluster import Cluster
from prometheus_client.parser import text_string_to_metric_families

import zeroserve

pytestmark = pytest.mark.integration

ROW = np.zeros((1, 64), np.float32)


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _scrape_until(url: str, done: Callable[[dict], bool], timeout: float = 10.0) -> dict:
    """Scrape until ``done`` holds (the broker refreshes its snapshot every second)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = _scrape(url)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_gateway_and_broker_metrics_count_what_happened(cluster: Cluster) -> None:
    cluster.start()
    with zeroserve.Client(cluster.url) as http:
        for _ in range(5):
            http.call("mlp", "predict", x=ROW)
        for _ in range(2):
            with pytest.raises(zeroserve.BadRequest):
                http.call("mlp", "predict", x=np.zeros((1, 3), np.float32))
        with pytest.raises(zeroserve.NotFound):
            http.call("mlp", "nope", x=ROW)
        for _ in range(3):
            http.infer("mlp", {"x": ROW})
    with zeroserve.Client(f"grpc://127.0.0.1:{cluster.grpc_port}") as grpc_client:
        for _ in range(2):
            grpc_client.infer("mlp.predict", {"x": ROW})
            grpc_client.call("mlp", "predict", x=ROW)

    gateway = _scrape(cluster.url + "/metrics")
    requests = "zeroserve_gateway_requests_total"
    known = {"service": "mlp", "endpoint": "predict"}
    assert _value(gateway, requests, **known, route="rest", status="200") == 5
    assert _value(gateway, requests, **known, route="rest", status="400") == 2
    assert _value(gateway, requests, service="", endpoint="", route="rest", status="404") == 1
    assert _value(gateway, requests, **known, route="oip_http", status="200") == 3
    assert _value(gateway, requests, **known, route="oip_grpc", status="200") == 2
    assert _value(gateway, requests, **known, route="grpc", status="200") == 2
    assert _value(gateway, "zeroserve_gateway_request_duration_seconds_count", **known,
                  route="rest") == 7

    mlp = {"service": "mlp", "endpoint": "predict"}
    broker = _scrape_until(f"http://127.0.0.1:{cluster.metrics_port}/metrics", lambda s: _value(
        s, "zeroserve_broker_requests_total", **mlp, status="200") >= 12)
    assert _value(broker, "zeroserve_broker_workers", service="mlp") == 1
    assert _value(broker, "zeroserve_broker_worker_slots", service="mlp") == 2
    assert _value(broker, "zeroserve_broker_requests_total", **mlp, status="200") == 5 + 3 + 2 + 2
    batches = _value(broker, "zeroserve_broker_batches_total", **mlp)
    assert batches >= 1
    assert _value(broker, "zeroserve_broker_batch_size_count", **mlp) == batches
    assert _value(broker, "zeroserve_broker_batch_size_bucket", **mlp, le="+Inf") == batches
    assert _value(broker, "zeroserve_broker_exec_seconds_count", **mlp) == batches
    assert _value(broker, "zeroserve_broker_queue_wait_seconds_count", **mlp) == 12  # per request
    assert _value(broker, "zeroserve_broker_queue_depth", **mlp) == 0
    assert _value(broker, "zeroserve_broker_uptime_seconds") > 0


def test_endpoint_errors_are_counted_by_status_and_shown_by_zeroserve_status(
        cluster: Cluster) -> None:
    cluster.broker()
    cluster.gateway()
    cluster.test_worker("Probe")
    cluster.wait_ready(1)
    for _ in range(3):
        assert cluster.post("/probe/whoami", {})[0] == 200
    for _ in range(2):
        assert cluster.post("/probe/fail", {"message": "on purpose"})[0] == 500

    gateway = _scrape(cluster.url + "/metrics")
    requests = "zeroserve_gateway_requests_total"
    assert _value(gateway, requests, service="probe", endpoint="whoami", route="rest",
                  status="200") == 3
    assert _value(gateway, requests, service="probe", endpoint="fail", route="rest",
                  status="500") == 2
    fail, whoami = ({"service": "probe", "endpoint": e} for e in ("fail", "whoami"))
    broker = _scrape_until(f"http://127.0.0.1:{cluster.metrics_port}/metrics", lambda s: _value(
        s, "zeroserve_broker_requests_total", **fail, status="500") >= 2)
    assert _value(broker, "zeroserve_broker_requests_total", **fail, status="500") == 2
    assert _value(broker, "zeroserve_broker_requests_total", **fail, status="200") == 0
    assert _value(broker, "zeroserve_broker_requests_total", **whoami, status="200") == 3

    address = f"tcp://127.0.0.1:{cluster.frontend_port}"
    table = subprocess.run([sys.executable, "-m", "zeroserve", "status", "--once",
                            "--frontend", address], capture_output=True, text=True, timeout=30,
                           env=cluster.env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.split("\n")
    worker = next(line for line in lines if " probe " in f" {line} " and "serving" in line)
    assert worker.split()[1:5] == ["probe", "2", "0", "serving"]
    rows = {line.split()[0]: line.split() for line in lines
            if line.startswith("probe.") and "batch sizes" not in line}
    assert rows["probe.whoami"][3] == "3" and rows["probe.fail"][3] == "2"  # requests column

    raw = subprocess.run([sys.executable, "-m", "zeroserve", "status", "--json", "--frontend",
                          address], capture_output=True, text=True, timeout=30, env=cluster.env)
    assert raw.returncode == 0, raw.stderr
    assert json.loads(raw.stdout)["endpoints"]["probe.fail"]["statuses"] == {"500": 2}


def test_stored_jobs_by_state_on_the_broker_metrics(cluster: Cluster) -> None:
    metrics_url = f"http://127.0.0.1:{cluster.metrics_port}/metrics"
    cluster.env["ZEROSERVE_JOBS_RETRY_BACKOFF_S"] = "0.1"
    cluster.broker()
    cluster.gateway()
    cluster.test_worker("Chores")
    cluster.wait_ready(1)
    assert not [k for k in _scrape(metrics_url) if k[0] == "zeroserve_jobs"]  # no store yet
    for endpoint, inputs in [("mark", {"tag": "a"}), ("mark", {"tag": "b"}),
                             ("always_fails", {"message": "on purpose"})]:
        status, body, _ = cluster.post("/v1/jobs", {"service": "chores", "endpoint": endpoint,
                                                    "inputs": inputs})
        assert status == 202, body
    samples = _scrape_until(metrics_url, lambda s: _value(s, "zeroserve_jobs", state="succeeded")
                            + _value(s, "zeroserve_jobs", state="failed") >= 3, timeout=30.0)
    assert _value(samples, "zeroserve_jobs", state="succeeded") == 2
    assert _value(samples, "zeroserve_jobs", state="failed") == 1
    assert _value(samples, "zeroserve_jobs", state="queued") == 0
