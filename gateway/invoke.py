"""One call through the broker, shared by every front end (REST, OIP over HTTP and gRPC).

Front ends parse their own wire format into an endpoint's inputs; from there the
path is the same: validate against the schema, key the request for batching,
send it to the broker, decode the answer. Every failure is a
:class:`~gateway.errors.RequestFailed` carrying a :class:`~zeroserve.wire.envelope.Status`,
or an :class:`~zeroserve.schema.InvalidInput` for inputs that do not match the schema;
each front end's error boundary turns either into its own error form.
"""
from __future__ import annotations

from typing import Any

from batching.tensors import batch_key, row_count
from gateway.broker_link import BrokerLink, EndpointInfo
from gateway.errors import RequestFailed
from gateway.oip_models import VERSION, ModelRef, resolve
from zeroserve.schema import validate_inputs
from zeroserve.wire import codec
from zeroserve.wire.envelope import Status
from zeroserve.wire.frontend import error_details


async def find_endpoint(link: BrokerLink, service: str, endpoint: str) -> EndpointInfo:
    """The schema of ``service.endpoint``; 404 if no worker serves it, 503 without a broker."""
    info = link.cached_endpoint(service, endpoint) or await link.endpoint(service, endpoint)
    if info is not None:
        return info
    if not link.alive:
        raise RequestFailed(Status.NO_WORKER, f"the broker at {link.address} does not answer")
    if service in link.services:
        raise RequestFailed(Status.NOT_FOUND, f"service '{service}' has no endpoint '{endpoint}'")
    raise RequestFailed(Status.NOT_FOUND, f"unknown service '{service}'")


async def find_model(link: BrokerLink, model: str, version: str | None
                     ) -> tuple[ModelRef, EndpointInfo]:
    """The endpoint serving an Open Inference Protocol model (404 if none, 503 without a
    broker); ``version`` empty or None means the current one."""
    if version not in (None, "", VERSION):
        raise RequestFailed(Status.NOT_FOUND, f"model '{model}' has no version '{version}'; "
                                              f"its version is '{VERSION}'")
    ref = resolve(model, link.services)
    if ref is None and await link.refresh_if_stale():
        ref = resolve(model, link.services)
    if ref is None:
        if not link.alive:
            raise RequestFailed(Status.NO_WORKER,
                                f"the broker at {link.address} does not answer")
        raise RequestFailed(Status.NOT_FOUND, f"unknown model '{model}'")
    return ref, await find_endpoint(link, ref.service, ref.endpoint)


async def call(link: BrokerLink, info: EndpointInfo, inputs: Any, timeout_s: float) -> Any:
    """Validate ``inputs`` against the endpoint's schema (raises
    :class:`~zeroserve.schema.InvalidInput` if they do not match), run it, and return its
    answer."""
    inputs = validate_inputs(info.inputs, inputs)
    rows, key = 1, b""
    if info.batchable:
        rows, key = row_count(inputs, info.batch_dim), batch_key(inputs, info.batch_dim)
    try:
        meta, frames = codec.encode(inputs)
    except codec.CodecError as exc:
        raise RequestFailed(Status.BAD_REQUEST, f"inputs cannot be sent: {exc}") from None
    reply = await link.request(info.service, info.name, timeout_s, meta, frames, rows, key)
    if reply.status is not Status.OK:
        details = error_details(reply)
        raise RequestFailed(reply.status, str(details["error"]), details.get("retry_after_s"))
    try:
        return codec.decode(reply.meta, reply.body)
    except codec.CodecError as exc:
        raise RequestFailed(Status.INTERNAL,
                            f"worker sent an undecodable answer: {exc}") from None
