"""The gateway's gRPC request parser: a message, or a MalformedRequest that says why and
when to log it (fake clock)."""
from __future__ import annotations

import logging

import pytest

from gateway.accept import EventReport
from gateway.grpc_messages import MalformedRequest, request_parser
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
