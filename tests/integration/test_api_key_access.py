"""API keys on a real gateway: HTTP (REST and OIP) and gRPC refuse calls without a key
(401 / UNAUTHENTICATED) or outside the key's services (403 / PERMISSION_DENIED)."""
from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from cluster import Cluster
from tritonclient.utils import InferenceServerException

import zeroserve
from gateway.api_keys import digest, new_key

pytestmark = pytest.mark.integration

ROW = np.zeros((1, 64), np.float32)


def test_keys_guard_every_route_but_health(cluster: Cluster) -> None:
    mlp_key, other_key = new_key(), new_key()
    keys = cluster.tmp / "keys.yaml"
    keys.write_text(f"""keys:
  - {{name: mlp-team, sha256: {digest(mlp_key)}, services: [mlp]}}
  - {{name: elsewhere, sha256: {digest(other_key)}, services: [gpu_sim]}}
""")
    cluster.broker()
    cluster.gateway(env={"ZEROSERVE_GATEWAY_API_KEYS_FILE": str(keys)})
    cluster.worker()
    cluster.wait_ready(1)  # /readyz is public

    status, answer, headers = cluster.post("/mlp/predict", {"x": ROW.tolist()})
    assert status == 401 and "API key" in answer["error"]
    assert {k.lower(): v for k, v in headers.items()}["www-authenticate"] == "Bearer"
    assert cluster.get("/v2/health/live")[0] == 200

    grpc_url = f"grpc://127.0.0.1:{cluster.grpc_port}"
    for url in (cluster.url, grpc_url):
        with zeroserve.Client(url, api_key=mlp_key) as client:
            assert client.call("mlp", "predict", x=ROW).shape == (1, 10)
            assert client.infer("mlp", {"x": ROW})["output"].shape == (1, 10)
            assert list(client.services()) == ["mlp"]
        with zeroserve.Client(url) as client, pytest.raises(zeroserve.Unauthorized):
            client.call("mlp", "predict", x=ROW)
        with zeroserve.Client(url, api_key="zs_nope") as client, \
                pytest.raises(zeroserve.Unauthorized):
            client.infer("mlp", {"x": ROW})
        with zeroserve.Client(url, api_key=other_key) as client:
            with pytest.raises(zeroserve.Forbidden, match="may not use service 'mlp'"):
                client.call("mlp", "predict", x=ROW)
            assert client.services() == {}

    http = triton.InferenceServerClient(f"127.0.0.1:{cluster.http_port}")
    x = triton.InferInput("x", [1, 64], "FP32")
    x.set_data_from_numpy(ROW)
    assert http.infer("mlp", [x], headers={"X-API-Key": mlp_key}).as_numpy("output").shape == \
        (1, 10)
    with pytest.raises(InferenceServerException) as info:
        http.get_model_metadata("mlp", headers={"X-API-Key": other_key})
    assert info.value.status() == "403"
    http.close()
