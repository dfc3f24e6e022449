"""What the broker's metrics port answers: /metrics, the live page and its data, JSON 404s."""
from __future__ import annotations

import json

from broker.metrics import BrokerMetrics
from broker.stats import TIME_BUCKETS_S


def test_the_metrics_port_serves_metrics_the_page_and_its_data() -> None:
    metrics = BrokerMetrics()
    metrics.update({"uptime_s": 12.5, "broker_id": "b1", "malformed_dropped": 0,
                    "workers": [], "endpoints": {}, "jobs": {}})
    status, headers, body = metrics.answer("/metrics")
    assert status == 200 and b"zeroserve_broker_uptime_seconds 12.5" in body
    assert headers["Content-Type"].startswith("text/plain")
    status, headers, body = metrics.answer("/ui")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert b'fetch("ui/data"' in body and b"https://" not in body and b"http://" not in body
    status, headers, body = metrics.answer("/ui/data?x=1")
    data = json.loads(body)
    assert status == 200 and data["time_s"] == 12.5 and data["stats"]["broker_id"] == "b1"
    assert data["time_buckets_s"] == list(TIME_BUCKETS_S)
    status, _, body = metrics.answer("/nope")
    assert status == 404 and "/ui" in json.loads(body)["error"]
