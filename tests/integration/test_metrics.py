"""Prometheus metrics of a real gateway and broker, parsed with prometheus_client's parser."""
from __future__ import annotations

import time
import urllib.request

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

    time.sleep(1.5)  # the broker refreshes its snapshot every second
    broker = _scrape(f"http://127.0.0.1:{cluster.metrics_port}/metrics")
    assert _value(broker, "zeroserve_broker_workers", service="mlp") == 1
    assert _value(broker, "zeroserve_broker_worker_slots", service="mlp") == 2
    assert _value(broker, "zeroserve_broker_requests_total", endpoint="mlp.predict",
                  status="200") == 5 + 3 + 2 + 2
    batches = _value(broker, "zeroserve_broker_batches_total", endpoint="mlp.predict")
    assert batches >= 1
    assert _value(broker, "zeroserve_broker_batch_size_count", endpoint="mlp.predict") == batches
    assert _value(broker, "zeroserve_broker_batch_size_bucket", endpoint="mlp.predict",
                  le="+Inf") == batches
    assert _value(broker, "zeroserve_broker_queue_depth", endpoint="mlp.predict") == 0
    assert _value(broker, "zeroserve_broker_uptime_seconds") > 0
