"""How a failed call ends on gRPC: the status code of each zeroserve status, and the abort."""
from __future__ import annotations

import grpc

from gateway.invoke import RequestFailed
from zeroserve.protocol import Status

GRPC_CODE = {
    Status.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    Status.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    Status.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    Status.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
    Status.PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Status.USER_ERROR: grpc.StatusCode.INTERNAL,
    Status.INTERNAL: grpc.StatusCode.INTERNAL,
    Status.NO_WORKER: grpc.StatusCode.UNAVAILABLE,
    Status.QUEUE_FULL: grpc.StatusCode.UNAVAILABLE,
    Status.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
}


async def abort(context: grpc.aio.ServicerContext, exc: RequestFailed) -> None:
    """End the call with the status of ``exc`` and its message as details (raises)."""
    await context.abort(GRPC_CODE.get(exc.status, grpc.StatusCode.UNKNOWN), str(exc))


def call_headers(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's text metadata as headers with lower-case names (API keys travel here)."""
    return {str(key).lower(): value for key, value in (context.invocation_metadata() or ())
            if isinstance(value, str)}
