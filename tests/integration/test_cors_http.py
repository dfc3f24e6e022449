"""CORS over HTTP on a real gateway: preflights on every route, the headers on answers and
errors, keys still needed for calls, and nothing while CORS is off."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from cluster import Cluster

from gateway.api_keys import digest, new_key

pytestmark = pytest.mark.integration

APP = "https://app.example"


def _send(url: str, method: str, headers: dict, body: bytes | None = None
          ) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _preflight(url: str, origin: str = APP, method: str = "POST",
               headers: str = "content-type, authorization") -> tuple[int, dict, bytes]:
    return _send(url, "OPTIONS", {"Origin": origin, "Access-Control-Request-Method": method,
                                  "Access-Control-Request-Headers": headers})


def test_preflights_and_answers_carry_cors_headers(cluster: Cluster) -> None:
    key = new_key()
    keys = cluster.tmp / "keys.yaml"
    keys.write_text(f"keys:\n  - {{name: team, sha256: {digest(key)}, services: [mlp]}}\n")
    cluster.broker()
    cluster.gateway(env={"ZEROSERVE_GATEWAY_API_KEYS_FILE": str(keys),
                         "ZEROSERVE_GATEWAY_CORS_ALLOWED_ORIGINS": f'["{APP}"]'})
    cluster.worker()
    cluster.wait_ready(1)
    url = cluster.url
    for path in ("/mlp/predict", "/v2/models/mlp/infer", "/v1/jobs", "/v1/services",
                 "/healthz", "/ui/data", "/v2/models/mlp"):
        status, headers, _ = _preflight(url + path)
        assert status == 204, (path, status)  # no key needed for a preflight
        assert headers["Access-Control-Allow-Origin"] == APP
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert "Authorization" in headers["Access-Control-Allow-Headers"]
        assert headers["Access-Control-Max-Age"] == "600"

    status, headers, body = _preflight(url + "/mlp/predict", origin="https://evil.example")
    assert status == 403 and "origin" in json.loads(body)["error"]
    assert "Access-Control-Allow-Origin" not in headers
    status, _, body = _preflight(url + "/mlp/predict", headers="x-secret")
    assert status == 403 and "x-secret" in json.loads(body)["error"]

    row = json.dumps({"x": [[0.5] * 64]}).encode()
    call = {"Origin": APP, "Content-Type": "application/json"}
    status, headers, _ = _send(url + "/mlp/predict", "POST",
                               {**call, "Authorization": f"Bearer {key}"}, row)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == APP and headers["Vary"] == "Origin"
    assert headers["Access-Control-Expose-Headers"] == "Retry-After"
    status, headers, _ = _send(url + "/mlp/predict", "POST", call, row)
    assert status == 401  # the key is still needed, and the browser may read why
    assert headers["Access-Control-Allow-Origin"] == APP
    status, headers, _ = _send(url + "/mlp/predict", "POST",
                               {**call, "Origin": "https://evil.example",
                                "Authorization": f"Bearer {key}"}, row)
    assert status == 200 and "Access-Control-Allow-Origin" not in headers


def test_cors_is_off_by_default(cluster: Cluster) -> None:
    cluster.start()
    status, headers, _ = _preflight(cluster.url + "/mlp/predict")
    assert status == 405 and "Access-Control-Allow-Origin" not in headers
    status, headers, _ = _send(cluster.url + "/healthz", "GET", {"Origin": APP})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
