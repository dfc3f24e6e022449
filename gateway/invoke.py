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
from dataclasses import replace
from typing import Any, TypeVar

from batching.tensors import batch_key, row_count
from gateway.broker_link import BrokerLink
from gateway.errors import RequestFailed
from gateway.oip_models import ModelRef, resolve
from zeroserve.schema import validate_inputs
from zeroserve.traffic import choose_version
from zeroserve.wire import codec
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription
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


def chosen_version(link: BrokerLink, known: ServiceDescription, version: int | None,
                   by_traffic: bool = True) -> ServiceDescription | None:
    """``known`` at ``version`` (None if it does not serve it); with no version, the version
    that the service's traffic split draws (``by_traffic``, and a split set: one draw of the
    gateway's :class:`~zeroserve.traffic.SpreadDraws`), else the latest served. The choice is
    made here, before the inputs are validated against the chosen version's schema."""
    if version is not None:
        return known.at(version)
    if by_traffic and known.traffic:
        served = [v for v in known.served_versions() if (at := known.at(v)) and at.workers]
        drawn = choose_version(known.traffic, served, link.draws.next())
        if drawn is not None:
            return known.at(drawn)
    return known


def parse_version(model: str, version: str | None) -> int | None:
    """The version a path or request names (None: none, "" included); a version that is not
    a decimal of at least 1 is a version no model has (404 in Triton's words)."""
    if not version:
        return None
    if not version.isdigit() or int(version) < 1:
        raise RequestFailed(Status.NOT_FOUND, unknown_version(model, version))
    return int(version)


def _endpoint(link: BrokerLink, service: str, endpoint: str, version: int | None
              ) -> EndpointDescription | None:
    known = link.descriptions.get(service)
    at = None if known is None else chosen_version(link, known, version)
    return None if at is None else at.endpoints.get(endpoint)


async def find_endpoint(link: BrokerLink, service: str, endpoint: str,
                        version: int | None = None) -> EndpointDescription:
    """The description of ``service.endpoint`` at ``version`` (None: as
    :func:`chosen_version` chooses) (:func:`look_up`); else :func:`not_served`: 404 if the
    broker serves no such endpoint or version."""
    found = await look_up(link, lambda: _endpoint(link, service, endpoint, version))
    if found is not None:
        return found
    known = link.descriptions.get(service)
    if known is not None and version is not None and known.at(version) is None:
        raise not_served(link, Status.NOT_FOUND, f"service '{service}' has no version "
                         f"{version}; it serves {known.served_versions()}")
    if known is not None:
        raise not_served(link, Status.NOT_FOUND,
                         f"service '{service}' has no endpoint '{endpoint}'")
    raise not_served(link, Status.NOT_FOUND, f"unknown service '{service}'")


def unknown_model(model: str) -> str:
    """Triton's message for a model no endpoint serves (clients match it)."""
    return f"Request for unknown model: '{model}' is not found"


def unknown_version(model: str, version: str) -> str:
    """Triton's message for a version that ``model`` does not have."""
    return f"Request for unknown model: '{model}' version {version} is not found"


async def find_model(link: BrokerLink, model: str, version: str | None,
                     by_traffic: bool = False) -> tuple[ModelRef, EndpointDescription]:
    """The endpoint serving an Open Inference Protocol model at ``version`` (:func:`look_up`;
    else :func:`not_served`: 404 if no endpoint serves it); ``version`` empty or None means
    the latest version served, or, for an inference (``by_traffic``), the one the traffic
    split draws (:func:`chosen_version`); a version the model lacks is 404. Messages are
    Triton's (:func:`unknown_model`, :func:`unknown_version`). The returned ref names the
    version chosen."""
    ref = await look_up(link, lambda: resolve(model, link.descriptions))
    if ref is None:
        raise not_served(link, Status.NOT_FOUND, unknown_model(model))
    asked = parse_version(model, version)
    known = link.descriptions.get(ref.service)
    at = None if known is None else chosen_version(link, known, asked, by_traffic)
    endpoint = ref.endpoint
    if at is not None and ref.is_default:
        endpoint = next(iter(at.endpoints), endpoint)
    info = None if at is None else at.endpoints.get(endpoint)
    if at is None or info is None:
        raise RequestFailed(Status.NOT_FOUND, unknown_version(
            model, version or str(ref.version)))
    return replace(ref, endpoint=endpoint, version=at.version), info


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
