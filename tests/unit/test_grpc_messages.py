"""The gateway's gRPC request parser: a message, or a MalformedRequest that says why and
when to log it (fake clock)."""
from __future__ import annotations

import logging

import pytest
from google.protobuf.message import DecodeError

from gateway.accept import EventReport
from gateway.grpc_messages import BytesApart, MalformedRequest, request_parser, split_field
from zeroserve.grpc_gen import grpc_service_pb2 as pb
from zeroserve.wire.envelope import Status


def test_valid_bytes_parse_to_the_message() -> None:
    request = pb.ModelInferRequest(model_name="mlp.predict", id="r1")
    parse = request_parser(pb.ModelInferRequest, EventReport(5.0), clock=lambda: 0.0)
    assert parse(request.SerializeToString()) == request


def test_bytes_that_do_not_parse_are_a_malformed_request_reported_once_per_interval() -> None:
    now = [100.0]
    parse = request_parser(pb.ModelInferRequest, EventReport(5.0), clock=lambda: now[0])
    first = parse(b"\xff")
    assert first == MalformedRequest("inference.ModelInferRequest",
                                     "1 bytes that do not parse (DecodeError)", 1, 1)
    quiet = [parse(b"\x0a\x05ab") for _ in range(99)]
    assert all(isinstance(q, MalformedRequest) and q.unreported is None for q in quiet)
    now[0] = 105.0
    later = parse(b"\xff")
    assert isinstance(later, MalformedRequest) and (later.unreported, later.total) == (100, 101)


def test_a_malformed_request_is_refused_with_its_reason_and_logged_only_when_due(
        caplog: pytest.LogCaptureFixture) -> None:
    due = MalformedRequest("inference.ModelInferRequest", "3 bytes that do not parse", 7, 9)
    quiet = MalformedRequest("inference.ModelInferRequest", "3 bytes that do not parse", None, 10)
    with caplog.at_level(logging.WARNING, logger="zeroserve.gateway"):
        failure = due.refuse("gRPC ModelInfer from ipv4:127.0.0.1:5")
        quiet.refuse("gRPC ModelInfer from ipv4:127.0.0.1:5")
    assert failure.status is Status.BAD_REQUEST
    assert str(failure) == ("request is not a valid inference.ModelInferRequest: "
                            "3 bytes that do not parse")
    assert [r.getMessage() for r in caplog.records] == [
        "gateway: refused malformed gRPC request (gRPC ModelInfer from ipv4:127.0.0.1:5: "
        "request is not a valid inference.ModelInferRequest: 3 bytes that do not parse); "
        "7 since the last report, 9 in all"]
    assert not any(r.exc_info for r in caplog.records)


RAW_FIELD = pb.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number


def _large_request() -> pb.ModelInferRequest:
    """Every kind of top-level field, raw entries among the others and past 64 KiB."""
    request = pb.ModelInferRequest(model_name="echo", model_version="2", id="r-1")
    request.parameters["timeout"].int64_param = 5_000_000
    request.parameters["flag"].bool_param = True
    for name in ("a", "b"):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[-1, 4])
        tensor.parameters["p"].string_param = "x"
    request.outputs.add(name="out")
    request.raw_input_contents.extend([bytes(range(256)) * 300, b"", b"\x80" * 70_000])
    return request


def test_a_large_requests_raw_contents_are_views_apart_from_the_same_message() -> None:
    request = _large_request()
    data = request.SerializeToString()
    parsed = request_parser(pb.ModelInferRequest, EventReport(60.0),
                            apart=RAW_FIELD)(data)
    assert isinstance(parsed, BytesApart)
    assert [bytes(e) for e in parsed.entries] == list(request.raw_input_contents)
    assert all(e.obj is data for e in parsed.entries)  # views of the request, not copies
    assert not parsed.message.raw_input_contents
    parsed.message.raw_input_contents.extend(bytes(e) for e in parsed.entries)
    assert parsed.message == request


def test_fields_in_any_order_keep_their_order_when_the_raw_contents_are_taken_out() -> None:
    head = pb.ModelInferRequest(model_name="first", id="a")
    head.raw_input_contents.append(b"\x01" * 70_000)
    tail = pb.ModelInferRequest(model_name="second")  # the last model_name wins
    tail.inputs.add(name="late")
    data = head.SerializeToString() + tail.SerializeToString()
    parsed = request_parser(pb.ModelInferRequest, EventReport(60.0), apart=RAW_FIELD)(data)
    assert isinstance(parsed, BytesApart)
    parsed.message.raw_input_contents.extend(bytes(e) for e in parsed.entries)
    assert parsed.message == pb.ModelInferRequest.FromString(data)


def test_a_small_request_is_parsed_whole() -> None:
    request = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\x00" * 16])
    parsed = request_parser(pb.ModelInferRequest, EventReport(60.0),
                            apart=RAW_FIELD)(request.SerializeToString())
    assert parsed == request


def test_every_cut_of_a_message_is_split_exactly_or_left_to_protobuf() -> None:
    data = _large_request().SerializeToString()
    small = pb.ModelInferRequest(model_name="m", id="i", raw_input_contents=[b"ab", b"c"],
                                 inputs=[pb.ModelInferRequest.InferInputTensor(name="x")])
    small_data = small.SerializeToString()
    cuts = [data[:n] for n in range(0, len(data), 997)] + \
        [small_data[:n] for n in range(len(small_data))] + \
        [b"\x00" + small_data, b"\x0b" + small_data, small_data + b"\xff" * 11]
    for cut in cuts:
        split = split_field(cut, RAW_FIELD)
        if split is None:
            continue  # protobuf parses the whole cut, as without the scan
        rest, entries = split
        try:
            whole = pb.ModelInferRequest.FromString(cut)
        except DecodeError:
            with pytest.raises(DecodeError):
                pb.ModelInferRequest.FromString(rest)
            continue
        message = pb.ModelInferRequest.FromString(rest)
        message.raw_input_contents.extend(bytes(e) for e in entries)
        assert message == whole
