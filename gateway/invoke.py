"""One call through the broker, shared by every front end (REST, OIP over HTTP and gRPC).

Front ends parse their own wire format into an endpoint's inputs; from there the
path is the same: validate against the schema, key the request for batching,
send it to the broker, decode the answer. Every failure is a
:class:`~gateway.errors.RequestFailed` carrying a :class:`~zeroserve.wire.envelope.Status`,
or an :class:`~zeroserve.schema.InvalidInput` for inputs that do not match the schema;
each front end's error boundary turns either into its own error form.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from batching.tensors import batch_key, row_count
from gateway.broker_link import BrokerLink
from gateway.errors import RequestFailed
from gateway.oip_models import VERSION, ModelRef, resolve
from zeroserve.schema import validate_inputs
from zeroserve.wire import codec
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import Status
from zeroserve.wire.frontend import error_details

RETRY_AFTER_S = 1  # of the 503s a gateway answers itself while the broker is young
T = TypeVar("T")


async def look_up(link: BrokerLink, find: Callable[[], T | None]) -> T | None:
    """What ``find`` finds in ``link.descriptions``; on a miss, asks the broker again once,
    and while a miss is no proof (the broker is young, or restarted since its last answer:
    :attr:`~gateway.broker_link.BrokerLink.knows_every_service`) waits for the broker's
    models to settle, as the broker holds a request for a service it does not know yet."""
    found = find()
    if found is None and await link.refresh_if_stale():
        found = find()
    if found is None and not link.knows_every_service and await link.settle():
        found = find()
    return found


def not_served(link: BrokerLink, missing: Status, message: str) -> RequestFailed:
    """The answer to a call naming what ``link.descriptions`` lack (after :func:`look_up`):
    ``missing`` (404, say) with ``message`` only when the broker's models are settled
    (:attr:`~gateway.broker_link.BrokerLink.knows_every_service`); 503 without a broker; else
    (they did not settle in time) 503 with Retry-After, as the broker's job desk answers in its
    start-up grace: the service's workers may not have registered again yet."""
    if not link.alive:
        return RequestFailed(Status.NO_WORKER, f"the broker at {link.address} does not answer")
    if link.knows_every_service:
        return RequestFailed(missing, message)
    return RequestFailed(Status.NO_WORKER, f"{message}: the broker started or restarted "
                         "recently and its workers may not have registered again; retry shortly",
                         RETRY_AFTER_S)


def _endpoint(link: BrokerLink, service: str, endpoint: str) -> EndpointDescription | None:
    known = link.descriptions.get(service)
    return None if known is None else known.endpoints.get(endpoint)


async def find_endpoint(link: BrokerLink, service: str, endpoint: str) -> EndpointDescription:
    """The description of ``service.endpoint`` (:func:`look_up`); else :func:`not_served`:
    404 if the broker serves no such endpoint."""
    found = await look_up(link, lambda: _endpoint(link, service, endpoint))
    if found is not None:
        return found
    if service in link.descriptions:
        raise not_served(link, Status.NOT_FOUND,
                         f"service '{service}' has no endpoint '{endpoint}'")
    raise not_served(link, Status.NOT_FOUND, f"unknown service '{service}'")


def unknown_model(model: str) -> str:
    """Triton's message for a model no endpoint serves (clients match it)."""
    return f"Request for unknown model: '{model}' is not found"


def unknown_version(model: str, version: str) -> str:
    """Triton's message for a version that ``model`` does not have."""
    return f"Request for unknown model: '{model}' version {version} is not found"


async def find_model(link: BrokerLink, model: str, version: str | None
                     ) -> tuple[ModelRef, EndpointDescription]:
    """The endpoint serving an Open Inference Protocol model (:func:`look_up`; else
    :func:`not_served`: 404 if no endpoint serves it); ``version`` empty or None means the
    current one, any other than :data:`~gateway.oip_models.VERSION` is 404. Messages are
    Triton's (:func:`unknown_model`, :func:`unknown_version`)."""
    ref = await look_up(link, lambda: resolve(model, link.descriptions))
    if ref is None:
        raise not_served(link, Status.NOT_FOUND, unknown_model(model))
    if version not in (None, "", VERSION):
        raise RequestFailed(Status.NOT_FOUND, unknown_version(model, version))
    return ref, await find_endpoint(link, ref.service, ref.endpoint)


async def call(link: BrokerLink, info: EndpointDescription, inputs: Any,
               timeout_s: float, stages: list | None = None) -> Any:
    """Validate ``inputs`` against the endpoint's schema (raises
    :class:`~zeroserve.schema.InvalidInput` if they do not match), run it, and return its
    answer. With a ``stages`` list, the stages that answered it are added to that list
    (whether it succeeds or fails; none for a failure before any worker ran it)."""
    inputs = validate_inputs(info.inputs, inputs)
    rows, key = 1, b""
    if info.batchable:
        rows, key = row_count(inputs, info.batch_dim), batch_key(inputs, info.batch_dim)
    try:
        meta, frames = codec.encode(inputs)
    except codec.CodecError as exc:
        raise RequestFailed(Status.BAD_REQUEST, f"inputs cannot be sent: {exc}") from None
    reply = await link.request(info, timeout_s, meta, frames, rows, key, stages is not None)
    if stages is not None and reply.stages:
        stages.extend(reply.stages)
    if reply.status is not Status.OK:
        details = error_details(reply)
        raise RequestFailed(reply.status, str(details["error"]), details.get("retry_after_s"))
    try:
        return codec.decode(reply.meta, reply.body)
    except codec.CodecError as exc:
        raise RequestFailed(Status.INTERNAL,
                            f"worker sent an undecodable answer: {exc}") from None
