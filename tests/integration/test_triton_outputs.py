"""tritonclient against zeroserve as against Triton: Triton's error wording, JSON errors on
unknown paths."""
from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from cluster import ROOT, Cluster
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

SERVICE = f"{ROOT / 'tests' / 'triton_services.py'}:TritonModels"


@pytest.fixture(scope="module")
def tri(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(tmp_path_factory.mktemp("triton-outputs"))
    try:
        yield cluster.start(SERVICE)
    finally:
        cluster.stop()


def _inputs(module, rows: int = 1) -> list:
    a = np.arange(16 * rows, dtype=np.int32).reshape(rows, 16)
    tensors = [module.InferInput("INPUT0", [rows, 16], "INT32"),
               module.InferInput("INPUT1", [rows, 16], "INT32")]
    for tensor in tensors:
        tensor.set_data_from_numpy(a)
    return tensors


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_unknown_model_and_version_read_as_tritons(tri: Cluster, module) -> None:
    port = tri.http_port if module is httpclient else tri.grpc_port
    with module.InferenceServerClient(f"127.0.0.1:{port}") as client:
        calls = [lambda: client.infer("ghost", _inputs(module)),
                 lambda: client.get_model_metadata("ghost"),
                 lambda: client.get_model_config("ghost")]
        for call in calls:
            with pytest.raises(InferenceServerException) as info:
                call()
            assert info.value.message() == "Request for unknown model: 'ghost' is not found"
        for call in (lambda: client.get_model_metadata("tri", "7"),
                     lambda: client.infer("tri", _inputs(module), model_version="7")):
            with pytest.raises(InferenceServerException) as info:
                call()
            assert info.value.message() == "Request for unknown model: 'tri' version 7 is not found"
        assert not client.is_model_ready("ghost")


def test_unknown_model_ready_is_404_with_tritons_wording(tri: Cluster) -> None:
    assert tri.get("/v2/models/ghost/ready") == (
        404, {"error": "Request for unknown model: 'ghost' is not found"})


def test_unknown_paths_answer_json_404(tri: Cluster) -> None:
    assert tri.get("/v2/nothing/here/at/all") == (
        404, {"error": "no route serves GET /v2/nothing/here/at/all"})
    status, body, headers = tri.post("/no/such/route/here", {})
    assert (status, body) == (404, {"error": "no route serves POST /no/such/route/here"})
    assert headers["Content-Type"].startswith("application/json")
    request = urllib.request.Request(tri.url + "/v3", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 404 and b'"error"' in info.value.read()


def test_server_name_and_version_are_settings(cluster: Cluster) -> None:
    cluster.broker()
    cluster.gateway(env={"ZEROSERVE_GATEWAY_SERVER_NAME": "triton",
                         "ZEROSERVE_GATEWAY_SERVER_VERSION": "2.58.0"})
    cluster.worker(SERVICE)
    cluster.wait_ready()
    with httpclient.InferenceServerClient(f"127.0.0.1:{cluster.http_port}") as client:
        meta = client.get_server_metadata()
        assert (meta["name"], meta["version"]) == ("triton", "2.58.0")
    with grpcclient.InferenceServerClient(f"127.0.0.1:{cluster.grpc_port}") as client:
        grpc_meta = client.get_server_metadata()
        assert (grpc_meta.name, grpc_meta.version) == ("triton", "2.58.0")
        assert list(grpc_meta.extensions) == meta["extensions"]


def test_server_identity_defaults_to_zeroserve(tri: Cluster) -> None:
    import zeroserve

    with httpclient.InferenceServerClient(f"127.0.0.1:{tri.http_port}") as client:
        meta = client.get_server_metadata()
    assert (meta["name"], meta["version"]) == ("zeroserve", zeroserve.__version__)


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_named_outputs_in_metadata_and_config(tri: Cluster, module) -> None:
    port = tri.http_port if module is httpclient else tri.grpc_port
    with module.InferenceServerClient(f"127.0.0.1:{port}") as client:
        if module is httpclient:
            meta = client.get_model_metadata("tri")
            config = client.get_model_config("tri")
            outputs = [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]]
            dims = [(t["name"], t["data_type"], t["dims"]) for t in config["output"]]
            assert config["max_batch_size"] == 8
        else:
            meta = client.get_model_metadata("tri")
            config = client.get_model_config("tri").config
            outputs = [(t.name, t.datatype, list(t.shape)) for t in meta.outputs]
            dims = [(t.name, "TYPE_INT32" if t.data_type == 8 else t.data_type, list(t.dims))
                    for t in config.output]
            assert config.max_batch_size == 8
    assert outputs == [("OUTPUT0", "INT32", [-1, 16]), ("OUTPUT1", "INT32", [-1, 16])]
    assert dims == [("OUTPUT0", "TYPE_INT32", [16]), ("OUTPUT1", "TYPE_INT32", [16])]


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_requested_outputs_return_only_those(tri: Cluster, module) -> None:
    port = tri.http_port if module is httpclient else tri.grpc_port
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    with module.InferenceServerClient(f"127.0.0.1:{port}") as client:
        every = client.infer("tri", _inputs(module, 2))
        np.testing.assert_array_equal(every.as_numpy("OUTPUT0"), a + a)
        np.testing.assert_array_equal(every.as_numpy("OUTPUT1"), a - a)
        only = client.infer("tri", _inputs(module, 2),
                            outputs=[module.InferRequestedOutput("OUTPUT1")])
        names = [o["name"] for o in only.get_response()["outputs"]] if module is httpclient \
            else [o.name for o in only.get_response().outputs]
        assert names == ["OUTPUT1"]
        assert only.as_numpy("OUTPUT0") is None
        np.testing.assert_array_equal(only.as_numpy("OUTPUT1"), a - a)
        single = client.infer("tri.single", _inputs(module, 2)[:1])
        np.testing.assert_array_equal(single.as_numpy("output"), a * 3)


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_an_answer_outside_the_declared_outputs_is_a_500_naming_the_output(
        tri: Cluster, module) -> None:
    port = tri.http_port if module is httpclient else tri.grpc_port
    status = "500" if module is httpclient else "StatusCode.INTERNAL"
    with module.InferenceServerClient(f"127.0.0.1:{port}") as client:
        for model, message in [
                ("tri.wrong_dtype", "output 'OUTPUT1': dtype int64 does not match the declared "
                                    "int32"),
                ("tri.one_missing", "output 'OUTPUT1' is missing from the endpoint's answer")]:
            with pytest.raises(InferenceServerException) as info:
                client.infer(model, _inputs(module))
            assert message in info.value.message() and info.value.status() == status
