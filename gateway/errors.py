"""How a failed call is answered, for every front end of the gateway.

A failure is a :class:`RequestFailed` carrying a wire
:class:`~zeroserve.wire.envelope.Status`; the known input errors
(:class:`~zeroserve.schema.InvalidInput`, :class:`~zeroserve.wire.oip_tensors.TensorError`)
are the caller's and answer 400. This module is the one place where a status becomes
an HTTP status (with its headers) or a gRPC code; the error boundaries that apply it
are :class:`gateway.rest.BaseHandler` (tornado) and :func:`gateway.grpc_calls.grpc_boundary`
(grpc.aio). Anything else that escapes a handler is a bug of the gateway: it answers 500 /
INTERNAL with :data:`INTERNAL_MESSAGE` and is logged once, with its traceback.
"""
from __future__ import annotations

import logging

import grpc

from zeroserve.schema import InvalidInput
from zeroserve.wire.envelope import Status
from zeroserve.wire.oip_tensors import TensorError

log = logging.getLogger("zeroserve.gateway")

INTERNAL_MESSAGE = "internal error in the gateway"


class RequestFailed(Exception):
    """An error answer: its status, message and, for overload, seconds to wait."""

    def __init__(self, status: Status, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


HTTP_STATUS: dict[Status, int] = {
    Status.OK: 200,
    Status.BAD_REQUEST: 400,
    Status.UNAUTHORIZED: 401,
    Status.FORBIDDEN: 403,
    Status.NOT_FOUND: 404,
    Status.CONFLICT: 409,
    Status.CANCELLED: 499,  # nginx's "client closed request": logged, never really answered
    Status.PAYLOAD_TOO_LARGE: 413,
    Status.USER_ERROR: 500,
    Status.INTERNAL: 500,
    Status.NO_WORKER: 503,
    Status.QUEUE_FULL: 503,  # with Retry-After
    Status.DEADLINE_EXCEEDED: 504,
}

GRPC_CODE: dict[Status, grpc.StatusCode] = {
    Status.OK: grpc.StatusCode.OK,
    Status.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    Status.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    Status.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    Status.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
    Status.CANCELLED: grpc.StatusCode.CANCELLED,
    Status.PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Status.USER_ERROR: grpc.StatusCode.INTERNAL,
    Status.INTERNAL: grpc.StatusCode.INTERNAL,
    Status.NO_WORKER: grpc.StatusCode.UNAVAILABLE,
    Status.QUEUE_FULL: grpc.StatusCode.UNAVAILABLE,
    Status.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def http_status(status: Status) -> int:
    """The HTTP status a gateway answers ``status`` with."""
    return HTTP_STATUS[status]


def grpc_code(status: Status) -> grpc.StatusCode:
    """The gRPC code a gateway ends a call failed with ``status`` with."""
    return GRPC_CODE[status]


def http_headers(failure: RequestFailed) -> dict[str, str]:
    """The headers of an HTTP error answer: ``Retry-After`` (seconds) when the failure says
    when to try again, ``WWW-Authenticate`` on a 401."""
    headers = {}
    if failure.retry_after is not None:
        headers["Retry-After"] = str(failure.retry_after)
    if failure.status is Status.UNAUTHORIZED:
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def known_failure(exc: BaseException) -> RequestFailed | None:
    """The answer of an error the gateway expects (a :class:`RequestFailed`, or a known input
    error: 400 with its message); None for anything else."""
    if isinstance(exc, RequestFailed):
        return exc
    if isinstance(exc, (InvalidInput, TensorError)):
        return RequestFailed(Status.BAD_REQUEST, str(exc))
    return None


def failure_of(exc: Exception, call: str) -> RequestFailed:
    """The answer ``exc`` ends a call with: :func:`known_failure`, else INTERNAL with
    :data:`INTERNAL_MESSAGE`, logged once with its traceback and ``call`` (what the call was
    and, where known, its request id)."""
    failure = known_failure(exc)
    if failure is None:
        log.error("gateway: %s failed: %s: %s", call, type(exc).__name__, exc, exc_info=exc)
        failure = RequestFailed(Status.INTERNAL, INTERNAL_MESSAGE)
    return failure
