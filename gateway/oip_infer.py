"""One Open Inference Protocol inference, whichever front end it came through.

HTTP (:mod:`gateway.oip_http`) and gRPC (:mod:`gateway.oip_grpc`) differ only in
their body formats and deadlines, which they give as an :class:`InferFormat`; the
path is the same: read the request into an :class:`~gateway.oip_rest_body.InferRequest`,
take its shared memory inputs (copied, or referred to where the worker reads them in
place: :mod:`gateway.shm_direct`), turn its tensors into the endpoint's inputs, call the
broker (validation and batching as on every route: :func:`gateway.invoke.call`), turn the
answer into output tensors, keep those asked for, and let the format encode them.

A :class:`~zeroserve.wire.oip_tensors.TensorError` from reading the request or
choosing its outputs is the caller's (400 at the error boundary); one from the
endpoint's answer is the endpoint's (``USER_ERROR``, 500).
"""
from __future__ import annotations

from typing import Protocol, TypeVar

import numpy as np

from gateway.broker_link import BrokerLink
from gateway.errors import RequestFailed
from gateway.invoke import call
from gateway.oip_models import ModelRef, endpoint_inputs, endpoint_outputs
from gateway.oip_rest_body import InferRequest, select_outputs
from gateway.shm_direct import place_shm_inputs
from gateway.shm_regions import CallerRegions
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import Status
from zeroserve.wire.oip_tensors import TensorError

Encoded = TypeVar("Encoded", covariant=True)


class InferFormat(Protocol[Encoded]):
    """How one front end reads an inference request and writes its answer; ``regions`` are the
    caller's shared memory regions (None: the gateway has none)."""

    regions: CallerRegions | None

    def parse(self) -> InferRequest:
        """The request, its shared memory inputs not yet read; :class:`TensorError` or
        :class:`RequestFailed` if it is malformed."""
        ...

    def deadline_s(self, requested_us: int | None) -> float:
        """Seconds the call may take, given the request's own ``timeout`` parameter."""
        ...

    def encode(self, model: str, request: InferRequest,
               outputs: list[tuple[str, np.ndarray]]) -> Encoded:
        """The answer carrying ``outputs`` (selected and ordered as the request asked)."""
        ...


async def infer(link: BrokerLink, ref: ModelRef, info: EndpointDescription,
                body: InferFormat[Encoded]) -> Encoded:
    """Run one inference of model ``ref`` (served by ``info``, which the caller may use); a
    decoupled model (a streaming endpoint) is refused, as Triton refuses it."""
    if info.streams:
        raise RequestFailed(Status.BAD_REQUEST, (
            f"model '{ref.name}' is decoupled (it streams) and answers only over gRPC "
            "ModelStreamInfer or HTTP generate_stream"))
    request = body.parse()
    if request.shm_inputs or request.shm_outputs:
        place_shm_inputs(request, body.regions, info, link.shm_namespaces(ref.service))
    inputs = endpoint_inputs(info, request.inputs, ref.name)
    check_requested_outputs(ref, info, request.outputs)
    value = await call(link, info, inputs, body.deadline_s(request.timeout_us))
    try:
        produced = endpoint_outputs(info, value)
    except TensorError as exc:
        raise RequestFailed(Status.USER_ERROR, str(exc)) from None
    return body.encode(ref.name, request, select_outputs(produced, request.outputs, ref.name))


def check_requested_outputs(ref: ModelRef, info: EndpointDescription, wanted: dict) -> None:
    """Refuse, before the call, a requested output that a model declaring its named outputs
    does not have, in Triton's words (an undeclared answer is checked once it comes)."""
    if info.outputs:
        declared = {f.name for f in info.outputs}
        unknown = [name for name in wanted if name not in declared]
        if unknown:
            raise TensorError(f"unexpected inference output '{unknown[0]}' for model "
                              f"'{ref.name}'")
