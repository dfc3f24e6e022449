"""The gateway's one map of failures to answers: HTTP status and headers, gRPC code."""
from __future__ import annotations

import logging

import grpc
import pytest

from gateway.errors import (
    INTERNAL_MESSAGE,
    RequestFailed,
    failure_of,
    grpc_code,
    http_headers,
    http_status,
    known_failure,
)
from zeroserve.schema import InvalidInput
from zeroserve.wire.envelope import Status
from zeroserve.wire.oip_tensors import TensorError


@pytest.mark.parametrize("status", list(Status))
def test_every_status_has_an_http_status_and_a_grpc_code(status: Status) -> None:
    assert 200 <= http_status(status) < 600
    assert isinstance(grpc_code(status), grpc.StatusCode)


def test_statuses_without_an_http_twin_answer_its_nearest() -> None:
    assert http_status(Status.QUEUE_FULL) == 503 and http_status(Status.INTERNAL) == 500
    assert http_status(Status.DEADLINE_EXCEEDED) == 504
    assert http_status(Status.UNAUTHORIZED) == 401 and http_status(Status.FORBIDDEN) == 403
    assert grpc_code(Status.QUEUE_FULL) is grpc.StatusCode.UNAVAILABLE
    assert grpc_code(Status.CONFLICT) is grpc.StatusCode.FAILED_PRECONDITION


def test_overload_says_when_to_retry_and_a_401_how_to_authenticate() -> None:
    assert http_headers(RequestFailed(Status.QUEUE_FULL, "full", retry_after=2)) == {
        "Retry-After": "2"}
    assert http_headers(RequestFailed(Status.UNAUTHORIZED, "key")) == {
        "WWW-Authenticate": "Bearer"}
    assert http_headers(RequestFailed(Status.NOT_FOUND, "nope")) == {}


def test_input_errors_are_the_callers_and_answer_400_with_their_message() -> None:
    for exc in (InvalidInput("x", "must be a list"), TensorError("input 'x': bad shape")):
        failure = known_failure(exc)
        assert failure is not None and failure.status is Status.BAD_REQUEST
        assert str(failure) == str(exc)
    failed = RequestFailed(Status.CONFLICT, "not yet")
    assert known_failure(failed) is failed
    assert known_failure(ValueError("a bug")) is None


def test_an_unexpected_error_is_internal_and_logged_once_with_its_call(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="zeroserve.gateway"):
        failure = failure_of(KeyError("k"), "POST /mlp/predict")
        assert known_failure(TensorError("no log")) is not None
    assert failure.status is Status.INTERNAL and str(failure) == INTERNAL_MESSAGE
    assert len(caplog.records) == 1 and "POST /mlp/predict" in caplog.records[0].getMessage()
    assert caplog.records[0].exc_info is not None
