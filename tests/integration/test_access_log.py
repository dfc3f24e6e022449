"""The gateway's access log names the path of a failed request, never its query string,
where an API key sent as ``?api_key=`` would be written in clear."""
from __future__ import annotations

import time

import pytest
from cluster import Cluster

from gateway.api_keys import digest, new_key

pytestmark = pytest.mark.integration


def test_an_api_key_in_the_query_is_not_written_to_the_log(cluster: Cluster) -> None:
    key = new_key()
    keys = cluster.tmp / "keys.yaml"
    keys.write_text(f"keys:\n  - {{name: team, sha256: {digest(key)}, services: [mlp]}}\n")
    cluster.broker()
    gateway = cluster.gateway(env={"ZEROSERVE_GATEWAY_API_KEYS_FILE": str(keys)})
    cluster.worker()
    cluster.wait_ready(1)
    for path in (f"/mlp/predict?api_key={key}", f"/v1/jobs?api_key={key}&service=mlp",
                 f"/v2/models/mlp/infer?token={key}"):
        status, answer, _ = cluster.post(path, {"x": [[0.5] * 64]})
        assert status == 401, (path, answer)  # keys travel in headers only
    deadline = time.monotonic() + 5  # the line is written just after the answer is sent
    while "infer" not in gateway.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = gateway.log()
    assert "401 POST /mlp/predict" in log and "401 POST /v2/models/mlp/infer" in log
    assert key not in log and "api_key" not in log
