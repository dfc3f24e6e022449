"""The exceptions of the client SDK: one type per kind of error answer, carrying its message.

Over HTTP ``status`` is the HTTP status; over gRPC it is the HTTP status of the
same kind (a gRPC ``UNAVAILABLE`` is 503), so that handling code is the same for
both transports.
"""
from __future__ import annotations

import grpc


class ZeroserveError(Exception):
    """A call that the cluster answered with an error; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class BadRequest(ZeroserveError):
    """400: the inputs do not match the endpoint's schema."""


class Unauthorized(ZeroserveError):
    """401: the gateway needs an API key, and the call had none or an unknown one."""


class Forbidden(ZeroserveError):
    """403: the call's API key may not use that service."""


class Conflict(ZeroserveError):
    """409: the job's state does not allow that (a result before it succeeded, say)."""


class NotFound(ZeroserveError):
    """404: no such service, endpoint or model."""


class ServerError(ZeroserveError):
    """500: the endpoint raised, or the cluster failed."""


class Overloaded(ZeroserveError):
    """503: no worker, or the queue is full; the client retries it within the deadline."""


class Unreachable(Overloaded):
    """No gateway answered at the client's URL (refused, reset); retried like a 503."""


class DeadlineExceeded(ZeroserveError):
    """504: the deadline passed before the answer came."""


class PayloadTooLarge(BadRequest):
    """413: the request is larger than the gateway accepts."""


_BY_STATUS: dict[int, type[ZeroserveError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge,
    503: Overloaded, 504: DeadlineExceeded, 499: DeadlineExceeded}

_HTTP_OF_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.UNIMPLEMENTED: 501,
}


def from_http(status: int, message: str) -> ZeroserveError:
    """The typed exception for an HTTP error status."""
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else ZeroserveError)
    return kind(status, message)


def from_grpc(code: grpc.StatusCode, details: str | None) -> ZeroserveError:
    """The typed exception for a gRPC status (``UNAVAILABLE`` with no details: unreachable)."""
    if code is grpc.StatusCode.UNAVAILABLE and _connection_failure(details):
        return Unreachable(503, details or "no gateway answered")
    return from_http(_HTTP_OF_GRPC.get(code, 500), details or code.name)


def _connection_failure(details: str | None) -> bool:
    text = (details or "").lower()
    return not text or "failed to connect" in text or "connection refused" in text \
        or "connect failed" in text or "socket closed" in text
