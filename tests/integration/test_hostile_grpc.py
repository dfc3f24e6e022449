"""Malformed protobuf to every gRPC method of a real gateway: random bytes, a valid request
with flipped bytes, a truncated valid request, sent as they are over a raw channel. Each
ends with INVALID_ARGUMENT and its reason (or, when the bytes happen to parse, with what a
valid but wrong request answers), the gateway logs a few lines without a traceback, and
valid calls work afterwards."""
from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from gateway.grpc_messages import REPORT_INTERVAL_S
from zeroserve.grpc_gen import grpc_service_pb2 as oip_pb
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.wire import codec

pytestmark = pytest.mark.integration

SERVICES = [oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"],
            pb.DESCRIPTOR.services_by_name["Serving"], pb.DESCRIPTOR.services_by_name["Jobs"]]
METHODS = [method for service in SERVICES for method in service.methods]
TRIES = 8  # of each mutation, per method
MALFORMED = "request is not a valid "
# what a valid request with wrong contents may answer; never UNKNOWN or INTERNAL
VALID_BUT_WRONG = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                   grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
INPUTS = codec.encode({"x": np.zeros((1, 64), np.float32)}, threshold=1 << 62)[0]


def _valid(message: Descriptor) -> Message:
    """A valid request of this type: one the mlp example answers where the type names a
    model, a job or a call; any other type with every field filled (a new method's too)."""
    known: dict[str, Message] = {
        "inference.ModelInferRequest": oip_pb.ModelInferRequest(
            model_name="mlp.predict", id="r1", inputs=[oip_pb.ModelInferRequest.InferInputTensor(
                name="x", datatype="FP32", shape=[1, 64],
                contents=oip_pb.InferTensorContents(fp32_contents=[0.5] * 64))]),
        "inference.ModelReadyRequest": oip_pb.ModelReadyRequest(name="mlp.predict"),
        "inference.ModelMetadataRequest": oip_pb.ModelMetadataRequest(name="mlp.predict"),
        "inference.ModelConfigRequest": oip_pb.ModelConfigRequest(name="mlp.predict"),
        "zeroserve.v1.CallRequest": pb.CallRequest(service="mlp", endpoint="predict",
                                                   inputs=INPUTS),
        "zeroserve.v1.SubmitJobRequest": pb.SubmitJobRequest(service="mlp", endpoint="predict",
                                                             inputs=INPUTS),
        "zeroserve.v1.JobRequest": pb.JobRequest(id="no-such-job"),
    }
    if message.full_name in known:
        return known[message.full_name]
    filled = GetMessageClass(message)()
    for field in message.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE or field.is_repeated:
            continue
        value = {FieldDescriptor.TYPE_STRING: "mlp", FieldDescriptor.TYPE_BYTES: b"mlp",
                 FieldDescriptor.TYPE_BOOL: True}.get(field.type, 1)
        setattr(filled, field.name, value)
    return filled


def _valid_bytes(message: Descriptor) -> bytes:
    data = _valid(message).SerializeToString()
    # a message without fields is empty: give it an unknown field (which it keeps) to mutate
    return data or b"\x0a\x03mlp"


def _mutations(method: MethodDescriptor, rng: random.Random) -> list[tuple[str, bytes]]:
    valid = _valid_bytes(method.input_type)
    sent = []
    for _ in range(TRIES):
        sent.append(("random", rng.randbytes(rng.randint(1, 64))))
        flipped = bytearray(valid)
        for at in rng.sample(range(len(flipped)), min(3, len(flipped))):
            flipped[at] ^= rng.randint(1, 255)
        sent.append(("flipped", bytes(flipped)))
        sent.append(("truncated", valid[:rng.randint(1, len(valid) - 1)]))
    return sent


def _send(channel: grpc.Channel, method: MethodDescriptor, data: bytes
          ) -> tuple[grpc.StatusCode, str]:
    """The call's code and details; a stream is sent ``data`` as its one message.
    ModelStreamInfer answers a malformed message in the stream (Triton's rule: an error goes in
    ``error_message`` and the stream carries on): that answer counts as the INVALID_ARGUMENT
    that ends the other methods' calls."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.client_streaming:
            call: Callable = channel.stream_stream(path, request_serializer=None,
                                                   response_deserializer=None)
            for answer in call(iter([data]), timeout=10):
                error = oip_pb.ModelStreamInferResponse.FromString(answer).error_message
                if error.startswith(MALFORMED):
                    return grpc.StatusCode.INVALID_ARGUMENT, error
        else:
            channel.unary_unary(path, request_serializer=None,
                                response_deserializer=None)(data, timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _malformed_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "malformed gRPC request" in line]


def test_malformed_protobuf_to_every_grpc_method_is_invalid_argument_and_logged_rarely(cluster):
    cluster.start()
    gateway = next(d for d in cluster.daemons if d.name == "gateway")
    rng = random.Random(20261202)
    answers: Counter[tuple[str, grpc.StatusCode]] = Counter()
    refused = 0
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        for method in METHODS:
            for kind, data in _mutations(method, rng):
                code, details = _send(channel, method, data)
                answers[kind, code] += 1
                if details.startswith(MALFORMED):
                    refused += 1
                    assert code == grpc.StatusCode.INVALID_ARGUMENT
                    assert details.startswith(MALFORMED + method.input_type.full_name + ": ")
                else:
                    assert code in VALID_BUT_WRONG, (method.name, kind, data, code, details)
        sent = sum(answers.values())
        by_code = {f"{kind} {code.name}": n for (kind, code), n in sorted(answers.items(), key=str)}
        print(f"\n{sent} malformed calls to {len(METHODS)} methods; answers: {by_code}; "
              f"{refused} refused as malformed")
        assert sent == len(METHODS) * TRIES * 3
        assert refused >= sent // 2  # the fault happened: most mutations do not parse
        assert {kind for kind, code in answers if code == grpc.StatusCode.INVALID_ARGUMENT} \
            == {"random", "flipped", "truncated"}

        # past the report interval, one more malformed call logs the count of all of them
        time.sleep(REPORT_INTERVAL_S + 0.2)
        assert _send(channel, METHODS[0], b"\xff")[0] == grpc.StatusCode.INVALID_ARGUMENT

        # valid calls still work, on the same connection
        infer = oip_pb.ModelInferResponse.FromString(channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer")(
                _valid_bytes(oip_pb.ModelInferRequest.DESCRIPTOR), timeout=10))
        assert infer.outputs[0].shape == [1, 10]
        reply = pb.CallReply.FromString(channel.unary_unary("/zeroserve.v1.Serving/Call")(
            _valid_bytes(pb.CallRequest.DESCRIPTOR), timeout=10))
        assert codec.decode(reply.value).shape == (1, 10)

    log = gateway.log()
    lines = _malformed_lines(log)
    print(f"gateway log: {len(lines)} lines for {refused + 1} malformed calls; last: {lines[-1]}")
    assert "Traceback" not in log
    assert 2 <= len(lines) <= 5
    counted = re.search(r"(\d+) in all$", lines[-1])
    assert counted is not None and int(counted.group(1)) == refused + 1


def test_a_malformed_message_in_a_stream_is_answered_and_the_stream_goes_on(cluster):
    """Triton's ModelStreamInfer contract: the message's error is a response of the stream."""
    cluster.start()
    good = _valid_bytes(oip_pb.ModelInferRequest.DESCRIPTOR)
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        answers = stream(iter([good]), timeout=10)
        assert [oip_pb.ModelStreamInferResponse.FromString(a).error_message
                for a in answers] == [""]
        errors = [oip_pb.ModelStreamInferResponse.FromString(a).error_message
                  for a in stream(iter([good, good[:-3], good]), timeout=10)]
    assert sorted(errors)[:2] == ["", ""] and len(errors) == 3
    assert sorted(errors)[2].startswith(MALFORMED + "inference.ModelInferRequest: ")
