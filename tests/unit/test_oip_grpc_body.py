"""OIP gRPC messages: raw in -> raw out, typed in -> typed out."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from gateway.grpc_messages import BytesAfter, response_serializer
from gateway.oip_grpc_body import build_response, build_unary_response, parameter, parse_request
from zeroserve.grpc_gen import grpc_service_pb2 as pb
from zeroserve.wire.oip_tensors import TensorError

Tensor = pb.ModelInferRequest.InferInputTensor


def test_raw_inputs_pair_with_inputs_in_order() -> None:
    a, b = np.arange(4, dtype=np.float32), np.array([b"x", b"yz"], dtype=object)
    request = pb.ModelInferRequest(
        model_name="m", id="1",
        inputs=[Tensor(name="a", datatype="FP32", shape=[2, 2]),
                Tensor(name="b", datatype="BYTES", shape=[2])],
        raw_input_contents=[a.tobytes(), b"\x01\x00\x00\x00x\x02\x00\x00\x00yz"],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="out")])
    request.parameters["timeout"].int64_param = 250
    parsed, typed = parse_request(request)
    assert not typed and parsed.timeout_us == 250 and parsed.outputs == {"out": None}
    np.testing.assert_array_equal(parsed.inputs["a"][1], a.reshape(2, 2))
    assert parsed.inputs["b"][1].tolist() == b.tolist()
    response = build_response("m", "1", parsed, typed, [("out", a), ("s", b)])
    assert [bytes(r) for r in response.raw_output_contents] == [
        a.tobytes(), b"\x01\x00\x00\x00x\x02\x00\x00\x00yz"]
    assert not response.outputs[0].HasField("contents")


def test_typed_inputs_get_typed_outputs_but_fp16_stays_raw() -> None:
    request = pb.ModelInferRequest(inputs=[Tensor(
        name="a", datatype="UINT16", shape=[3],
        contents=pb.InferTensorContents(uint_contents=[1, 2, 65535]))])
    parsed, typed = parse_request(request)
    assert typed and parsed.inputs["a"][1].dtype == np.uint16
    response = build_response("m", "1", parsed, typed, [("o", np.array([1.5], np.float64))])
    assert list(response.outputs[0].contents.fp64_contents) == [1.5]
    assert not response.raw_output_contents
    half = build_response("m", "1", parsed, typed, [("o", np.array([1.5], np.float16))])
    assert len(half.raw_output_contents) == 1
    bf16 = build_response("m", "1", parsed, typed,
                          [("o", np.array([1.5], ml_dtypes.bfloat16))])
    assert bf16.outputs[0].datatype == "BF16"
    assert bf16.raw_output_contents[0] == b"\xc0\x3f"


def test_bf16_raw_in_raw_out_bit_exact() -> None:
    bits = np.array([0x7FC1, 0x0001, 0x8000], dtype="<u2")
    request = pb.ModelInferRequest(inputs=[Tensor(name="h", datatype="BF16", shape=[3])],
                                   raw_input_contents=[bits.tobytes()])
    parsed, typed = parse_request(request)
    arr = parsed.inputs["h"][1]
    assert not typed and arr.dtype == ml_dtypes.bfloat16
    response = build_response("m", "1", parsed, typed, [("o", arr)])
    assert response.outputs[0].datatype == "BF16"
    assert response.raw_output_contents[0] == bits.tobytes()


@pytest.mark.parametrize("request_, message", [
    (pb.ModelInferRequest(inputs=[Tensor(name="a", datatype="FP32", shape=[1])],
                          raw_input_contents=[b"", b""]), "2 raw_input_contents for 1"),
    (pb.ModelInferRequest(), "no inputs"),
    (pb.ModelInferRequest(inputs=[Tensor(
        name="a", datatype="FP16", shape=[1], contents=pb.InferTensorContents())]),
     "FP16 has no typed contents"),
    (pb.ModelInferRequest(inputs=[Tensor(
        name="a", datatype="BF16", shape=[1],
        contents=pb.InferTensorContents(fp32_contents=[1.5]))]),
     "BF16 has no typed contents; send it in raw_input_contents"),
    # shapes numpy cannot hold: np.prod([2**32, 2**32]) wraps to 0
    (pb.ModelInferRequest(inputs=[Tensor(
        name="a", datatype="FP32", shape=[2**32, 2**32], contents=pb.InferTensorContents())]),
     "tensor 'a': shape .* is too large"),
    (pb.ModelInferRequest(inputs=[Tensor(
        name="a", datatype="BYTES", shape=[2**32, 2**32], contents=pb.InferTensorContents())]),
     "tensor 'a': shape .* is too large"),
    (pb.ModelInferRequest(inputs=[Tensor(name="a", datatype="FP32", shape=[0, 2**62])],
                          raw_input_contents=[b""]), "tensor 'a': shape .* is too large"),
    (pb.ModelInferRequest(inputs=[Tensor(name="a", datatype="BYTES", shape=[0, 2**62])],
                          raw_input_contents=[b""]), "tensor 'a': shape .* is too large"),
    (pb.ModelInferRequest(inputs=[Tensor(name="a", datatype="INT8", shape=[2, -1])],
                          raw_input_contents=[b""]), "tensor 'a': shape must be a list of "
                                                     "at most 32 non-negative integers"),
    (pb.ModelInferRequest(inputs=[Tensor(
        name="a", datatype="UINT8", shape=[1],
        contents=pb.InferTensorContents(uint_contents=[256]))]), "UINT8"),
    (pb.ModelInferRequest(inputs=[Tensor(
        name="a", datatype="INT32", shape=[2],
        contents=pb.InferTensorContents(int_contents=[1]))]), "needs 2 elements"),
])
def test_malformed_requests(request_: pb.ModelInferRequest, message: str) -> None:
    with pytest.raises(TensorError, match=message):
        parse_request(request_)


def test_parameters_read_all_five_choices() -> None:
    request = pb.ModelInferRequest()
    request.parameters["p"].uint64_param = 2**63
    request.parameters["d"].double_param = 0.5
    assert parameter(request.parameters["p"]) == 2**63
    assert parameter(request.parameters["d"]) == 0.5
    assert parameter(pb.InferParameter()) is None


@pytest.mark.parametrize("sizes", [[0], [1], [127, 128], [300, 0, 70000], [1 << 21]])
def test_a_unary_answer_serializes_to_the_bytes_of_the_whole_response(sizes: list) -> None:
    outputs = [(f"o{k}", np.arange(n, dtype=np.uint8)) for k, n in enumerate(sizes)]
    parsed, typed = parse_request(pb.ModelInferRequest(
        id="req-7", inputs=[Tensor(name="a", datatype="UINT8", shape=[1])],
        raw_input_contents=[b"\x01"]))
    whole = build_response("m", "3", parsed, typed, outputs)
    apart = build_unary_response("m", "3", parsed, typed, outputs)
    assert isinstance(apart, BytesAfter) and not apart.message.raw_output_contents
    assert all(np.shares_memory(np.frombuffer(entry, np.uint8), arr)
               for entry, (_, arr) in zip(apart.entries, outputs) if len(arr))
    serialize = response_serializer(pb.ModelInferResponse)
    assert serialize(apart) == whole.SerializeToString()
    assert pb.ModelInferResponse.FromString(serialize(apart)) == whole
    assert serialize(whole) == whole.SerializeToString()


def test_a_typed_unary_answer_is_the_response_itself() -> None:
    parsed, typed = parse_request(pb.ModelInferRequest(inputs=[Tensor(
        name="a", datatype="INT32", shape=[1], contents=pb.InferTensorContents(
            int_contents=[4]))]))
    answer = build_unary_response("m", "1", parsed, typed, [("o", np.array([4], np.int32))])
    assert answer == build_response("m", "1", parsed, typed, [("o", np.array([4], np.int32))])
