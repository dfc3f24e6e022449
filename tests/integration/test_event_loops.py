"""The gateway on either event loop (``gateway.event_loop``): asyncio's own loop by default,
uvloop when asked ("uvloop", or "auto" where it is installed: the test extra installs it);
calls over HTTP and gRPC work on both, large bodies included, and the start-up line names
the loop."""
import numpy as np
import pytest
import tritonclient.grpc as triton
from cluster import Cluster
from reference_models import mlp, sample_input

import zeroserve

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("choice", ["auto", "uvloop", "asyncio"])
def test_calls_work_on_the_loop_the_gateway_names(tmp_path, choice):
    cluster = Cluster(tmp_path, env={"ZEROSERVE_GATEWAY_EVENT_LOOP": choice})
    try:
        cluster.start("mlp.py:MLP")
        x = sample_input(2)
        status, body, _ = cluster.post("/mlp/predict", {"x": x.tolist()})
        assert status == 200
        np.testing.assert_allclose(np.array(body, np.float32), mlp(x), rtol=1e-5)
        with triton.InferenceServerClient(f"127.0.0.1:{cluster.grpc_port}") as client:
            tensor = triton.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            answer = client.infer("mlp", [tensor])
        assert answer.as_numpy(answer.get_response().outputs[0].name).shape == (2, 10)
        big = sample_input(1 << 13)  # 2 MiB in: read into one buffer
        with zeroserve.Client(cluster.url) as sdk:
            np.testing.assert_allclose(sdk.call("mlp", "predict", x=big, timeout=60), mlp(big),
                                       rtol=1e-5)
        kind = "asyncio" if choice == "asyncio" else "uvloop"
        gateway = next(d for d in cluster.daemons if d.name == "gateway")
        assert f"event loop {kind}" in gateway.log(), gateway.log()
    finally:
        cluster.stop()


def test_a_loop_that_cannot_run_stops_the_gateway_with_the_reason(tmp_path):
    cluster = Cluster(tmp_path, env={"ZEROSERVE_GATEWAY_EVENT_LOOP": "trio"})
    try:
        gateway = cluster.gateway()
        assert gateway.proc.wait(20) == 1
        assert "gateway.event_loop must be one of auto, uvloop, asyncio" in gateway.log()
    finally:
        cluster.stop()
