"""The Open Inference Protocol over HTTP, driven by the real tritonclient.http."""
from __future__ import annotations

import gzip
import json
import urllib.request
import zlib

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as triton
from cluster import ROOT, Cluster
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

SERVICE = f"{ROOT / 'tests' / 'oip_services.py'}:OipModels"

DATATYPES = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 7, 255]], dtype=np.uint8),
    "UINT16": np.array([[0, 7, 65535]], dtype=np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array([[0, 7, 2**64 - 1]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127]], dtype=np.int8),
    "INT16": np.array([[-32768, 0, 32767]], dtype=np.int16),
    "INT32": np.array([[-2**31, 0, 2**31 - 1]], dtype=np.int32),
    "INT64": np.array([[-2**63, 0, 2**63 - 1]], dtype=np.int64),
    "FP16": np.array([[-1.5, 0.0, 65504.0]], dtype=np.float16),
    "FP32": np.array([[-1.5, 0.25, 3.0e38]], dtype=np.float32),
    "FP64": np.array([[-1.5, 0.25, 1.0e300]], dtype=np.float64),
    "BYTES": np.array([[b"", b"caf\xc3\xa9", b"z" * 300]], dtype=object),
}
# bfloat16 bit patterns: 1.5, -1, +inf, -inf, a NaN with a payload, the smallest
# subnormal, -0.0 and the largest finite value
BF16_BITS = np.array([0x3FC0, 0xBF80, 0x7F80, 0xFF80, 0x7FC1, 0x0001, 0x8000, 0x7F7F],
                     dtype="<u2")
BF16 = BF16_BITS.view(ml_dtypes.bfloat16).reshape(2, 4)
# shapes that numpy cannot make an array of, though three of them hold no element
HUGE_SHAPES = [[0, 2**70], [2**32, 2**32], [0, 2**40, 2**40], [0, 2**62, 4]]


# a 64 MiB call may hold a loaded host's worker past the tests' fast liveness (0.6 s): this
# module's calls are about the protocol, not about workers that go away
SLOW_LIVENESS = {"ZEROSERVE_HEARTBEAT_LIVENESS": "15"}


@pytest.fixture(scope="module")
def oip(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(tmp_path_factory.mktemp("oip-http"), env=SLOW_LIVENESS)
    try:
        yield cluster.start(SERVICE)
    finally:
        cluster.stop()


@pytest.fixture
def client(oip: Cluster):
    with triton.InferenceServerClient(f"127.0.0.1:{oip.http_port}") as c:
        yield c


def _input(name: str, arr: np.ndarray, binary: bool = True) -> triton.InferInput:
    datatype = "BYTES" if arr.dtype == object else triton.np_to_triton_dtype(arr.dtype)
    tensor = triton.InferInput(name, list(arr.shape), datatype)
    tensor.set_data_from_numpy(arr, binary_data=binary)
    return tensor


def test_health_and_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("oip")
    assert client.is_model_ready("oip.double", "1")
    assert not client.is_model_ready("nope")
    meta = client.get_server_metadata()
    assert meta["name"] == "zeroserve"
    assert "binary_tensor_data" in meta["extensions"]
    assert "statistics" in meta["extensions"]  # served: GET /v2/models/stats


def test_model_metadata_and_config(client: triton.InferenceServerClient, oip: Cluster) -> None:
    meta = client.get_model_metadata("oip.double")
    assert meta["name"] == "oip.double" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 4]}]
    assert client.get_model_config("oip.double")["max_batch_size"] == 16
    assert client.get_model_config("oip.double", "1")["max_batch_size"] == 16
    assert client.get_model_metadata("oip")["name"] == "oip"  # the default endpoint, echo
    assert client.get_model_config("oip")["max_batch_size"] == 0
    described = client.get_model_metadata("oip.describe")
    assert [t["datatype"] for t in described["inputs"]] == ["INT32", "BYTES"]
    index = {m["name"]: m["state"] for m in client.get_model_repository_index()}
    assert index["oip.double"] == "READY" and "oip" in index
    status, body, _ = oip.post("/v2/repository/index", {"ready": True})
    assert status == 200 and {m["state"] for m in body} == {"READY"}
    assert oip.post("/v2/repository/index", b"{not json")[0] == 400


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_round_trips(client: triton.InferenceServerClient, datatype: str,
                                    binary: bool) -> None:
    arr = DATATYPES[datatype]
    out = triton.InferRequestedOutput("output", binary_data=binary)
    result = client.infer("oip", [_input("x", arr, binary)], outputs=[out])
    got = result.as_numpy("output")
    assert got.shape == arr.shape
    if datatype == "BYTES":  # tritonclient gives str for JSON BYTES, bytes for binary
        want = arr.tolist() if binary else [[v.decode() for v in row] for row in arr.tolist()]
        assert got.tolist() == want
    else:
        assert got.dtype == arr.dtype
        np.testing.assert_array_equal(got, arr)
    response = result.get_response()
    assert response["model_name"] == "oip" and response["model_version"] == "1"
    assert response["outputs"][0]["datatype"] == datatype


def test_batched_rows_and_json_output_is_flat(oip: Cluster,
                                              client: triton.InferenceServerClient) -> None:
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    result = client.infer("oip.double", [_input("x", x)])
    np.testing.assert_array_equal(result.as_numpy("output"), x * 2)
    body = {"id": "7", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4],
                                   "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}]}
    status, answer, _ = oip.post("/v2/models/oip.double/versions/1/infer", body)
    assert status == 200
    assert answer["id"] == "7"
    assert answer["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [2, 4],
                                  "data": [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]}]


def test_named_outputs_from_a_dict_and_scalar_inputs(client: triton.InferenceServerClient
                                                     ) -> None:
    values = np.array([1, 2, 3], dtype=np.int32)
    label = np.array([b"hi"], dtype=object)
    result = client.infer("oip.describe", [_input("values", values), _input("label", label)],
                          outputs=[triton.InferRequestedOutput("label")])
    assert result.as_numpy("label").tolist() == [b"HI"]
    assert result.as_numpy("total") is None  # not asked for
    both = client.infer("oip.describe", [_input("values", values), _input("label", label)])
    assert both.as_numpy("total").tolist() == [6]


def test_64_mib_tensor(client: triton.InferenceServerClient) -> None:
    big = np.random.default_rng(0).random(8 * 1024 * 1024)  # 64 MiB of float64
    result = client.infer("oip", [_input("x", big)])
    np.testing.assert_array_equal(result.as_numpy("output"), big)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_and_response(client: triton.InferenceServerClient,
                                         algorithm: str) -> None:
    x = np.ones((16, 4), dtype=np.float32)
    result = client.infer("oip.double", [_input("x", x)],
                          request_compression_algorithm=algorithm,
                          response_compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("output"), x * 2)


@pytest.mark.parametrize("accept, encoding", [
    ("gzip, deflate", "gzip"), ("deflate", "deflate"), ("br", None), ("", None)])
@pytest.mark.parametrize("rows", [2, 400, 8000],
                         ids=["under-1-kib", "json-over-1-kib", "binary-128-kib"])
def test_an_answer_is_compressed_as_the_client_accepts_from_1_kib(
        oip: Cluster, accept: str, encoding: str | None, rows: int) -> None:
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    binary = rows > 1000  # binary outputs, written apart from their header when plain
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4],
                                     "data": x.ravel().tolist()}],
                         "outputs": [{"name": "output",
                                      "parameters": {"binary_data": binary}}]}).encode()
    request = urllib.request.Request(oip.url + "/v2/models/oip.double/infer", data=header,
                                     headers={"Content-Type": "application/json",
                                              "Accept-Encoding": accept})
    with urllib.request.urlopen(request) as resp:
        sent, body = resp.headers.get("Content-Encoding"), resp.read()
        length = resp.headers.get("Inference-Header-Content-Length")
        assert int(resp.headers["Content-Length"]) == len(body)
    assert sent == (encoding if rows > 2 else None)
    if sent == "gzip":
        body = gzip.decompress(body)
    elif sent == "deflate":
        body = zlib.decompress(body)
    if binary:
        answer = json.loads(body[:int(length)])
        output = np.frombuffer(body[int(length):], dtype=np.float32)
        assert answer["outputs"][0]["parameters"]["binary_data_size"] == output.nbytes
    else:
        output = np.array(json.loads(body)["outputs"][0]["data"], dtype=np.float32)
    np.testing.assert_array_equal(output.reshape(rows, 4), x * 2)


def test_errors_surface_with_their_message(client: triton.InferenceServerClient) -> None:
    x = np.zeros((1, 4), dtype=np.float32)
    cases = [
        (lambda: client.infer("nope", [_input("x", x)]),
         "Request for unknown model: 'nope' is not found", "404"),
        (lambda: client.get_model_metadata("oip.nope"),
         "Request for unknown model: 'oip.nope' is not found", "404"),
        (lambda: client.get_model_metadata("oip", "2"),
         "Request for unknown model: 'oip' version 2 is not found", "404"),
        (lambda: client.infer("oip.double", [_input("x", np.zeros((1, 5), np.float32))]),
         "shape [1, 5] does not match [-1, 4]", "400"),
        (lambda: client.infer("oip.double", [_input("x", x.astype(np.float64))]),
         "datatype FP64 does not match the model's FP32", "400"),
        (lambda: client.infer("oip.double", [_input("y", x)]), "has no input 'y'", "400"),
        (lambda: client.infer("oip.broken", [_input("x", x)]), "failed on purpose", "500"),
    ]
    for call, message, status in cases:
        with pytest.raises(InferenceServerException) as info:
            call()
        assert message in info.value.message(), info.value.message()
        assert info.value.status() == status


def test_malformed_bodies_get_400_json(oip: Cluster) -> None:
    url = "/v2/models/oip.double/infer"
    for body, headers, message in [
        (b"{not json", {}, "not valid"),
        (json.dumps({"inputs": []}).encode(), {}, "non-empty 'inputs'"),
        (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                 "parameters": {"binary_data_size": 16}}]}).encode(),
         {}, "runs past"),
        (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                 "data": [1, 2, 3]}]}).encode(), {}, "needs 4 elements"),
        (b"{}", {"Inference-Header-Content-Length": "99"}, "outside the body"),
        (zlib.compress(b"x")[:3], {"Content-Encoding": "deflate"}, "deflate"),
    ]:
        status, answer, _ = oip.post(url, body, headers=headers)
        assert status == 400, (body, answer)
        assert message in answer["error"], answer
    with urllib.request.urlopen(oip.url + "/v2/health/live") as resp:  # still serving
        assert json.loads(resp.read()) == {"live": True}


@pytest.mark.parametrize("binary_output", [True, False], ids=["binary-out", "json-asked"])
def test_bf16_round_trips_bit_exactly(client: triton.InferenceServerClient,
                                      binary_output: bool) -> None:
    out = triton.InferRequestedOutput("output", binary_data=binary_output)
    result = client.infer("oip", [_input("x", BF16)], outputs=[out])
    got = result.as_numpy("output")
    assert got.dtype == ml_dtypes.bfloat16 and got.shape == BF16.shape
    assert got.view("<u2").tolist() == BF16.view("<u2").tolist()
    described = result.get_response()["outputs"][0]
    assert described["datatype"] == "BF16"
    assert described["parameters"] == {"binary_data_size": 16}  # binary even when JSON asked


def test_declared_bf16_endpoint(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata("oip.bf16")
    assert meta["inputs"] == [{"name": "x", "datatype": "BF16", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "BF16", "shape": [-1, 4]}]
    config = client.get_model_config("oip.bf16")
    assert config["input"] == [{"name": "x", "data_type": "TYPE_BF16", "dims": [-1, 4]}]
    assert config["output"][0]["data_type"] == "TYPE_BF16"
    x = np.array([[1.5, -3.0, 0.0078125, 1e30]], dtype=ml_dtypes.bfloat16)
    got = client.infer("oip.bf16", [_input("x", x)]).as_numpy("output")
    assert got.dtype == ml_dtypes.bfloat16
    want = (x.astype(np.float32) * 2).astype(ml_dtypes.bfloat16)
    assert got.view("<u2").tolist() == want.view("<u2").tolist()
    with pytest.raises(InferenceServerException, match="datatype FP32 does not match the "
                                                       "model's BF16"):
        client.infer("oip.bf16", [_input("x", x.astype(np.float32))])


def test_bf16_in_json_is_refused(oip: Cluster) -> None:
    body = {"inputs": [{"name": "x", "datatype": "BF16", "shape": [1, 4],
                        "data": [1.0, 2.0, 3.0, 4.0]}]}
    status, answer, _ = oip.post("/v2/models/oip.bf16/infer", body)
    assert status == 400
    assert "tensor 'x': BF16 cannot travel in JSON 'data'; send it as binary" in \
        answer["error"]


def _binary_body(entry: dict, blob: bytes) -> tuple[bytes, dict]:
    entry = {**entry, "parameters": {"binary_data_size": len(blob)}}
    header = json.dumps({"inputs": [entry]}).encode()
    return header + blob, {"Inference-Header-Content-Length": str(len(header))}


@pytest.mark.parametrize("shape", HUGE_SHAPES)
def test_shapes_numpy_cannot_hold_get_400_naming_the_input(oip: Cluster, shape: list) -> None:
    requests = [(json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": shape,
                                         "data": []}]}).encode(), {})
                for datatype in ("FP32", "BYTES")]
    requests += [_binary_body({"name": "x", "datatype": datatype, "shape": shape}, b"")
                 for datatype in ("FP32", "BYTES", "BF16")]
    for body, headers in requests:
        status, answer, _ = oip.post("/v2/models/oip/infer", body, headers=headers)
        assert status == 400, (body, answer)
        assert "tensor 'x': shape" in answer["error"] and "too large" in answer["error"]


def test_negative_dims_get_400(oip: Cluster) -> None:
    body, headers = _binary_body({"name": "x", "datatype": "FP32", "shape": [2, -2]},
                                 b"\0" * 16)
    status, answer, _ = oip.post("/v2/models/oip/infer", body, headers=headers)
    assert status == 400 and "non-negative integers" in answer["error"]
