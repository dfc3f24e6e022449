"""How a failed gRPC call ends (the status code of each zeroserve status, the abort), and
who makes a call: its API key and the services it may see."""
from __future__ import annotations

from typing import Any

import grpc

from gateway.access import Access
from gateway.api_keys import Identity
from gateway.broker_link import BrokerLink
from gateway.invoke import RequestFailed
from zeroserve.wire.envelope import Status

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


def caller(access: Access, context: grpc.aio.ServicerContext) -> Identity | None:
    """Who makes the call, from the API key in its metadata (None when keys are off);
    raises :class:`RequestFailed` (401) when keys are on and the call has no valid one."""
    if not access.enforced:
        return None
    return access.identify({str(key).lower(): value
                            for key, value in (context.invocation_metadata() or ())
                            if isinstance(value, str)})


async def visible_services(access: Access, link: BrokerLink,
                           context: grpc.aio.ServicerContext) -> dict[str, Any]:
    """The broker's services (asked again when older than a second) that the caller may see;
    ends the call UNAUTHENTICATED when keys are on and it has no valid one."""
    try:
        identity = caller(access, context)
    except RequestFailed as exc:
        await abort(context, exc)
    return await access.visible_services(link, identity)
