"""The Open Inference Protocol over gRPC: the real tritonclient.grpc, and a KServe-style
client sending typed contents through our generated stubs."""
from __future__ import annotations

import queue

import grpc
import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as triton
from cluster import ROOT, Cluster
from test_oip_http import BF16, DATATYPES, HUGE_SHAPES
from tritonclient.utils import InferenceServerException

from zeroserve.grpc_gen import grpc_service_pb2 as pb
from zeroserve.grpc_gen import grpc_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

SERVICE = f"{ROOT / 'tests' / 'oip_services.py'}:OipModels"


# a 64 MiB call may hold a loaded host's worker past the tests' fast liveness (0.6 s): this
# module's calls are about the protocol, not about workers that go away
SLOW_LIVENESS = {"ZEROSERVE_HEARTBEAT_LIVENESS": "15"}


@pytest.fixture(scope="module")
def oip(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(tmp_path_factory.mktemp("oip-grpc"), env=SLOW_LIVENESS)
    try:
        yield cluster.start(SERVICE)
    finally:
        cluster.stop()


@pytest.fixture
def client(oip: Cluster):
    with triton.InferenceServerClient(f"127.0.0.1:{oip.grpc_port}") as c:
        yield c


def _input(name: str, arr: np.ndarray) -> triton.InferInput:
    datatype = "BYTES" if arr.dtype == object else triton.np_to_triton_dtype(arr.dtype)
    tensor = triton.InferInput(name, list(arr.shape), datatype)
    tensor.set_data_from_numpy(arr)
    return tensor


def test_health_metadata_and_config(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("oip.double") and not client.is_model_ready("nope")
    assert "binary_tensor_data" in client.get_server_metadata(as_json=True)["extensions"]
    meta = client.get_model_metadata("oip.double", as_json=True)
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]
    config = client.get_model_config("oip.double", as_json=True)["config"]
    assert config["max_batch_size"] == 16 and config["name"] == "oip.double"
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {"name": "oip.double", "version": "1", "state": "READY"} in index
    assert {m["name"] for m in index} >= {"oip", "oip.echo", "oip.double"}


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_round_trips_raw(client: triton.InferenceServerClient,
                                        datatype: str) -> None:
    arr = DATATYPES[datatype]
    result = client.infer("oip", [_input("x", arr)])
    got = result.as_numpy("output")
    assert got.shape == arr.shape
    if datatype == "BYTES":
        assert got.tolist() == arr.tolist()
    else:
        assert got.dtype == arr.dtype
        np.testing.assert_array_equal(got, arr)
    response = result.get_response()
    assert len(response.raw_output_contents) == 1  # raw in, raw out
    assert response.outputs[0].datatype == datatype


def test_batched_rows_and_64_mib(client: triton.InferenceServerClient) -> None:
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.testing.assert_array_equal(
        client.infer("oip.double", [_input("x", x)]).as_numpy("output"), x * 2)
    big = np.random.default_rng(1).random(8 * 1024 * 1024)
    np.testing.assert_array_equal(client.infer("oip", [_input("x", big)]).as_numpy("output"),
                                  big)


def test_errors_are_grpc_statuses(client: triton.InferenceServerClient) -> None:
    x = np.zeros((1, 4), dtype=np.float32)
    cases = [
        (lambda: client.infer("nope", [_input("x", x)]), "StatusCode.NOT_FOUND",
         "Request for unknown model: 'nope' is not found"),
        (lambda: client.infer("oip.double", [_input("x", np.zeros((1, 5), np.float32))]),
         "StatusCode.INVALID_ARGUMENT", "does not match [-1, 4]"),
        (lambda: client.infer("oip.double", [_input("x", x.astype(np.float64))]),
         "StatusCode.INVALID_ARGUMENT", "datatype FP64 does not match the model's FP32"),
        (lambda: client.infer("oip.broken", [_input("x", x)]), "StatusCode.INTERNAL",
         "failed on purpose"),
        (lambda: client.get_model_config("oip", "3"), "StatusCode.NOT_FOUND",
         "Request for unknown model: 'oip' version 3 is not found"),
    ]
    for call, status, message in cases:
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == status
        assert message in info.value.message()


def test_stream_answers_every_request_and_survives_errors(
        client: triton.InferenceServerClient) -> None:
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for k in range(5):
            x = np.full((1, 4), k, dtype=np.float32)
            client.async_stream_infer("oip.double", [_input("x", x)], request_id=str(k))
        client.async_stream_infer("oip.double", [_input("x", np.zeros((1, 4)))],
                                  request_id="bad")
        got, errors = {}, []
        for _ in range(6):
            result, error = answers.get(timeout=20)
            if error is not None:
                errors.append(str(error))
            else:
                got[result.get_response().id] = result.as_numpy("output")
    finally:
        client.stop_stream()
    assert sorted(got) == ["0", "1", "2", "3", "4"]
    for k in range(5):
        np.testing.assert_array_equal(got[str(k)], np.full((1, 4), 2 * k))
    assert len(errors) == 1 and "datatype FP64" in errors[0]


def test_typed_contents_in_get_typed_contents_out(oip: Cluster) -> None:
    """A KServe-style request: typed ``contents`` and parameters, no raw bytes."""
    with grpc.insecure_channel(f"127.0.0.1:{oip.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        tensor = pb.ModelInferRequest.InferInputTensor
        request = pb.ModelInferRequest(model_name="oip.describe", id="kserve-1", inputs=[
            tensor(name="values", datatype="INT32", shape=[3],
                   contents=pb.InferTensorContents(int_contents=[4, 5, 6])),
            tensor(name="label", datatype="BYTES", shape=[1],
                   contents=pb.InferTensorContents(bytes_contents=[b"typed"])),
        ])
        request.parameters["priority"].uint64_param = 1
        request.parameters["note"].double_param = 0.5
        response = stub.ModelInfer(request, timeout=20)
        assert response.id == "kserve-1" and not response.raw_output_contents
        outputs = {o.name: o for o in response.outputs}
        assert list(outputs["total"].contents.int64_contents) == [15]
        assert list(outputs["label"].contents.bytes_contents) == [b"TYPED"]

        short = pb.ModelInferRequest(model_name="oip.describe", inputs=[
            tensor(name="values", datatype="INT32", shape=[3],
                   contents=pb.InferTensorContents(int_contents=[1]))])
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(short, timeout=20)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "needs 3 elements" in info.value.details()


def test_bf16_round_trips_raw_bit_exactly(client: triton.InferenceServerClient) -> None:
    result = client.infer("oip", [_input("x", BF16)])
    got = result.as_numpy("output")
    assert got.dtype == ml_dtypes.bfloat16
    assert got.view("<u2").tolist() == BF16.view("<u2").tolist()
    assert result.get_response().outputs[0].datatype == "BF16"
    meta = client.get_model_metadata("oip.bf16", as_json=True)
    assert meta["inputs"] == [{"name": "x", "datatype": "BF16", "shape": ["-1", "4"]}]
    config = client.get_model_config("oip.bf16", as_json=True)["config"]
    assert config["input"][0]["data_type"] == "TYPE_BF16"
    assert config["output"][0]["data_type"] == "TYPE_BF16"
    x = np.array([[1.5, -3.0, 0.0078125, 1e30]], dtype=ml_dtypes.bfloat16)
    got = client.infer("oip.bf16", [_input("x", x)]).as_numpy("output")
    want = (x.astype(np.float32) * 2).astype(ml_dtypes.bfloat16)
    assert got.dtype == ml_dtypes.bfloat16
    assert got.view("<u2").tolist() == want.view("<u2").tolist()


def _refusal(stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest) -> str:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=20)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return info.value.details()


def test_typed_bf16_and_shapes_numpy_cannot_hold_are_invalid_argument(oip: Cluster) -> None:
    tensor = pb.ModelInferRequest.InferInputTensor
    with grpc.insecure_channel(f"127.0.0.1:{oip.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        typed_bf16 = pb.ModelInferRequest(model_name="oip.bf16", inputs=[tensor(
            name="x", datatype="BF16", shape=[1, 4],
            contents=pb.InferTensorContents(fp32_contents=[1, 2, 3, 4]))])
        assert "BF16 has no typed contents; send it in raw_input_contents" in \
            _refusal(stub, typed_bf16)
        for shape in [s for s in HUGE_SHAPES if max(s) < 2**63]:  # gRPC dims are int64
            for datatype in ("FP32", "BYTES", "BF16"):
                raw = pb.ModelInferRequest(model_name="oip", raw_input_contents=[b""], inputs=[
                    tensor(name="x", datatype=datatype, shape=shape)])
                details = _refusal(stub, raw)
                assert "tensor 'x': shape" in details and "too large" in details
            for datatype, field in (("FP32", "fp32_contents"), ("BYTES", "bytes_contents")):
                typed = pb.ModelInferRequest(model_name="oip", inputs=[tensor(
                    name="x", datatype=datatype, shape=shape,
                    contents=pb.InferTensorContents(**{field: []}))])
                details = _refusal(stub, typed)
                assert "tensor 'x': shape" in details and "too large" in details
        negative = pb.ModelInferRequest(model_name="oip", raw_input_contents=[b""], inputs=[
            tensor(name="x", datatype="FP32", shape=[3, -1])])
        assert "non-negative integers" in _refusal(stub, negative)
