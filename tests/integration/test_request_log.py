"""The gateway's request log: one JSON object per request, with the caller's key name and
never the key or the query string."""
from __future__ import annotations

import json
import time
import urllib.request

import pytest
from cluster import Cluster

from gateway.api_keys import digest, new_key

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _lines(path, count: int) -> list[dict]:
    """The log's lines once it has ``count`` besides those of the readiness wait."""
    deadline = time.monotonic() + 5  # a line is written just after its answer is sent
    while True:
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        if len([x for x in lines if x["path"] != "/readyz"]) >= count \
                or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_each_request_is_one_json_line_without_key_or_query(cluster: Cluster) -> None:
    key = new_key()
    keys = cluster.tmp / "keys.yaml"
    keys.write_text(f"keys:\n  - {{name: team, sha256: {digest(key)}, services: [mlp]}}\n")
    log_path = cluster.tmp / "requests.log"
    cluster.broker()
    cluster.gateway(env={"ZEROSERVE_GATEWAY_API_KEYS_FILE": str(keys),
                         "ZEROSERVE_GATEWAY_REQUEST_LOG_PATH": str(log_path)})
    cluster.worker()
    cluster.wait_ready(1)
    body = {"x": [[0.5] * 64]}
    sent = len(json.dumps(body).encode())
    status, answer, _ = cluster.post(f"/mlp/predict?api_key={key}", body)
    assert status == 401
    status, answer, answered = cluster.post("/mlp/predict?debug=1", body, headers={
        "Authorization": f"Bearer {key}", "X-Request-Id": "req-7",
        "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
    assert status == 200, answer
    request = urllib.request.Request(cluster.url + "/healthz")
    with urllib.request.urlopen(request, timeout=5) as resp:
        health = resp.read()

    lines = [line for line in _lines(log_path, 3) if line["path"] != "/readyz"]  # the wait's
    refused, called, healthz = lines[:3]
    text = log_path.read_text()
    assert key not in text and "api_key" not in text and "debug" not in text
    assert refused["status"] == 401 and refused["path"] == "/mlp/predict"
    assert refused["key"] is None and refused["trace_id"] is None
    assert called == {**called, "request_id": "req-7", "trace_id": TRACE, "route": "rest",
                      "method": "POST", "path": "/mlp/predict", "service": "mlp",
                      "endpoint": "predict", "status": 200, "bytes_in": sent, "key": "team"}
    assert called["bytes_out"] == int(answered["Content-Length"]) > 0
    assert called["duration_ms"] > 0 and called["time"].endswith("Z")
    assert healthz["path"] == "/healthz" and healthz["bytes_out"] == len(health)
    assert healthz["key"] is None and len(healthz["request_id"]) == 16


def test_the_request_log_is_off_by_default(cluster: Cluster) -> None:
    cluster.start()
    cluster.post("/mlp/predict", {"x": [[0.5] * 64]})
    gateway = next(d for d in cluster.daemons if d.name == "gateway")
    assert '"request_id"' not in gateway.log()
