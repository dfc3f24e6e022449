"""The exceptions of the client SDK: one type per kind of error answer, carrying its message.

Over HTTP ``status`` is the HTTP status; over gRPC it is the HTTP status of the
same kind (a gRPC ``UNAVAILABLE`` is 503), so that handling code is the same for
both transports. ``from_server`` tells an error answer a gateway sent from one the
client raised because no answer came (its own timeout, no gateway reachable).
"""
from __future__ import annotations

import grpc


class ZeroserveError(Exception):
    """A call that ended in an error; ``status`` is the HTTP status of its kind.

    ``from_server`` is True when the error comes from an answer a gateway sent (``message``
    is the gateway's, or quotes it), False when the client raised it because no answer came
    from a gateway: its own timeout ran out (:func:`no_answer`) or no gateway could be
    reached (:class:`Unreachable`).
    """

    def __init__(self, status: int, message: str, *, from_server: bool = True) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.from_server = from_server


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
    """503: no worker, or the queue is full; the client retries it within the deadline, no
    sooner than ``retry_after_s`` (the answer's ``Retry-After``, None when it had none)."""

    retry_after_s: float | None = None


class Unreachable(Overloaded):
    """No gateway answered at the client's URL (refused, reset); retried like a 503.
    Raised by the client, so ``from_server`` is False."""

    def __init__(self, status: int, message: str, *, from_server: bool = False) -> None:
        super().__init__(status, message, from_server=from_server)


class CallInterrupted(ZeroserveError):
    """The connection broke after the call's bytes were written, before its answer came: the
    call may or may not have run, so the client does not send it again (``from_server`` False).
    """

    def __init__(self, status: int, message: str, *, from_server: bool = False) -> None:
        super().__init__(status, message, from_server=from_server)


class DeadlineExceeded(ZeroserveError):
    """504: the deadline passed before the answer came. Sent by a gateway (``from_server``,
    the request was dropped or cut short in the cluster), or raised by the client when no
    answer came in time (``from_server`` False, see :func:`no_answer`)."""


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


_GRPC_LOCAL_DEADLINE = "Deadline Exceeded"  # grpc's details when the client's deadline ran out


def no_answer(waited_s: float, deadline_s: float) -> DeadlineExceeded:
    """The client's own :class:`DeadlineExceeded` (``from_server`` False): it waited
    ``waited_s`` seconds for an answer to a call of deadline ``deadline_s`` and none came."""
    return DeadlineExceeded(
        504, f"no answer came from the server in {waited_s:.1f} s (deadline {deadline_s:.1f} s);"
             " the client stopped waiting", from_server=False)


def no_chunk(idle_s: float | None) -> DeadlineExceeded:
    """The client's own :class:`DeadlineExceeded` (``from_server`` False) when a stream's next
    chunk did not come within its idle limit of ``idle_s`` seconds (None: the transport's)."""
    limit = "its idle limit" if idle_s is None else f"{idle_s:g} s"
    return DeadlineExceeded(504, f"no stream chunk came from the server in {limit}; the "
                                 "client stopped waiting", from_server=False)


def passed_while_retrying(last: ZeroserveError | None) -> DeadlineExceeded:
    """The client's :class:`DeadlineExceeded` when the deadline passed while it waited to retry
    ``last`` (an overload); ``from_server`` is that of ``last``."""
    return DeadlineExceeded(504, f"the deadline passed while retrying (last try: {last})",
                            from_server=last is not None and last.from_server)


def from_http(status: int, message: str, retry_after_s: float | None = None) -> ZeroserveError:
    """The typed exception for an HTTP error status (``retry_after_s``: its Retry-After)."""
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else ZeroserveError)
    error = kind(status, message)
    if isinstance(error, Overloaded):
        error.retry_after_s = retry_after_s
    return error


def from_grpc(code: grpc.StatusCode, details: str | None) -> ZeroserveError:
    """The typed exception for a gRPC status (``UNAVAILABLE`` before a connection was made:
    unreachable; after, when the connection broke: interrupted; ``DEADLINE_EXCEEDED`` with
    grpc's own details: the client's deadline ran out first)."""
    if code is grpc.StatusCode.UNAVAILABLE and _connection_failure(details):
        return Unreachable(503, details or "no gateway answered")
    if code is grpc.StatusCode.UNAVAILABLE and _connection_broken(details):
        return interrupted(details or "the connection broke")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and details == _GRPC_LOCAL_DEADLINE:
        return DeadlineExceeded(504, "no answer came from the server before the deadline; "
                                     "the client stopped waiting", from_server=False)
    return from_http(_HTTP_OF_GRPC.get(code, 500), details or code.name)


def _connection_failure(details: str | None) -> bool:
    text = (details or "").lower()
    return not text or "failed to connect" in text or "connection refused" in text \
        or "connect failed" in text


def _connection_broken(details: str | None) -> bool:
    text = (details or "").lower()
    return "socket closed" in text or "connection reset" in text


def interrupted(reason: object) -> CallInterrupted:
    """The client's :class:`CallInterrupted`: the connection broke (``reason``) once the call
    was sent."""
    return CallInterrupted(
        502, f"the connection to the gateway broke after the call was sent ({reason}); it may "
             "or may not have run, and the client did not send it again")
