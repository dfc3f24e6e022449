"""The request path end to end: real broker, gateway and workers on loopback."""
import concurrent.futures as cf
import subprocess
import sys

import numpy as np
import pytest
from reference_models import mlp, sample_input

import zeroserve

pytestmark = pytest.mark.integration


def test_round_trip_json_matches_the_reference_model(cluster):
    cluster.start("mlp.py:MLP")
    x = sample_input(2)
    status, body, headers = cluster.post("/mlp/predict", {"x": x.tolist()})
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    np.testing.assert_allclose(np.array(body, np.float32), mlp(x), rtol=1e-5)


def test_client_sends_and_receives_numpy(cluster):
    cluster.start("mlp.py:MLP")
    x = sample_input(3)
    with zeroserve.Client(cluster.url) as client:
        out = client.call("mlp", "predict", x=x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, 10)
    np.testing.assert_allclose(out, mlp(x), rtol=1e-5)


def test_text_service_sync_and_async_endpoints(cluster):
    cluster.start("text.py:Text")
    assert cluster.post("/text/reverse", {"text": "hello"})[:2] == (200, "olleh")
    status, body, _ = cluster.post("/text/shout", {"text": "hi", "times": 2})
    assert status == 200 and body == {"text": "HI HI", "length": 2}


def test_three_workers_all_receive_work(cluster):
    cluster.broker()
    cluster.gateway()
    for _ in range(3):
        cluster.test_worker("Probe")
    cluster.wait_ready(3)
    with cf.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: cluster.post("/probe/sleep", {"seconds": 0.05}),
                                range(30)))
    assert all(a[0] == 200 for a in answers)
    assert len({a[1]["pid"] for a in answers}) == 3


def test_unknown_service_and_endpoint_are_404_naming_them(cluster):
    cluster.start("mlp.py:MLP")
    status, body, _ = cluster.post("/nosuch/predict", {"x": []})
    assert status == 404 and "nosuch" in body["error"]
    status, body, _ = cluster.post("/mlp/nosuch", {"x": []})
    assert status == 404 and "nosuch" in body["error"] and "mlp" in body["error"]


@pytest.mark.parametrize("body, needle", [
    (b"{not json", "not valid JSON"),
    ({"y": [[0.0] * 64]}, "'y'"),
    ({"x": [["a"] * 64]}, "dtype"),
    ({"x": [[0.0] * 63]}, "shape"),
    ({}, "missing"),
    ([1, 2], "object of named inputs"),
])
def test_bad_input_is_400_naming_the_input_and_reason(cluster, body, needle):
    cluster.start("mlp.py:MLP")
    status, answer, _ = cluster.post("/mlp/predict", body)
    assert status == 400 and needle in answer["error"]
    assert cluster.post("/mlp/predict", {"x": [[0.0] * 64]})[0] == 200


def test_msgpack_body_is_answered_in_msgpack(cluster):
    from zeroserve.wire import codec
    cluster.start("mlp.py:MLP")
    meta, _ = codec.encode({"x": sample_input(1)}, threshold=1 << 62)
    import urllib.request
    req = urllib.request.Request(cluster.url + "/mlp/predict", data=meta, method="POST",
                                 headers={"Content-Type": "application/msgpack"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/msgpack"
        out = codec.decode(resp.read())
    np.testing.assert_allclose(out, mlp(sample_input(1)), rtol=1e-5)


def test_user_exception_is_500_with_type_and_message_and_worker_keeps_serving(cluster):
    cluster.broker()
    cluster.gateway()
    worker = cluster.test_worker("Probe")
    cluster.wait_ready(1)
    status, body, _ = cluster.post("/probe/fail", {"message": "boom"})
    assert status == 500 and body["error"] == "ValueError: boom"
    assert "Traceback" not in body["error"]
    status, body, _ = cluster.post("/probe/bad_output", {})
    assert status == 500 and "cannot be sent" in body["error"]
    assert cluster.post("/probe/double", {"x": [[1, 2, 3, 4]]})[:2] == (200, [[2, 4, 6, 8]])
    assert worker.alive()


@pytest.mark.parametrize("args, option", [
    (["zeroserve", "--help"], "serve"),
    (["zeroserve", "serve", "--help"], "--workers"),
    (["broker", "--help"], "--frontend"),
    (["gateway", "--help"], "--frontend"),
    (["worker", "--help"], "--slots"),
])
def test_every_command_has_help_that_explains_its_options(args, option):
    out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert option in out.stdout and "--heartbeat-interval" in out.stdout or args[-2:] == [
        "zeroserve", "--help"]


def test_status_command_shows_workers_and_endpoint_figures(cluster):
    cluster.start("mlp.py:MLP")
    assert cluster.post("/mlp/predict", {"x": [[0.0] * 64]})[0] == 200
    out = subprocess.run([sys.executable, "-m", "zeroserve", "status", "--frontend",
                          f"tcp://127.0.0.1:{cluster.frontend_port}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "mlp.predict" in out.stdout and "serving" in out.stdout
