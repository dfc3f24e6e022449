"""The jobs calls every front end makes (HTTP ``/v1/jobs`` and gRPC ``zeroserve.v1.Jobs``).

A submission is checked before the broker sees it: the service must serve the
task (404, or 400 for a real-time endpoint; 503 with Retry-After while the
broker is young and may not have heard from the service's workers again, see
:func:`gateway.invoke.not_served`), the inputs must match the task's schema
(400), and their encoding must fit ``jobs.max_input_bytes`` (413). Each call is
one control call to the broker; the broker answers a submission only once the
job is durably stored.

With API keys on, every call names its caller to the broker (:func:`caller_args`):
a job belongs to the key's name that submitted it, and another name (unless an
admin) gets the 404 of an unknown id and never sees it listed. The broker takes
this from the gateway only: the gateway is the one that authenticates.
"""
from __future__ import annotations

from typing import Any

from gateway.api_keys import Identity
from gateway.broker_link import BrokerLink
from gateway.errors import RequestFailed
from gateway.invoke import RETRY_AFTER_S, look_up, not_served
from zeroserve.schema import InvalidInput, validate_inputs
from zeroserve.tracing import with_trace
from zeroserve.wire import codec, descriptions
from zeroserve.wire.descriptions import TaskDescription
from zeroserve.wire.envelope import Status
from zeroserve.wire.frontend import ControlOp

_CONTROL_TIMEOUT_S = 10.0
IDEMPOTENCY_HEADER = "Idempotency-Key"


def caller_args(identity: Identity | None) -> dict[str, Any]:
    """The control-call arguments that name the caller: ``owner`` (the key's name) and
    ``admin``; none when API keys are off (the broker then shows every job)."""
    if identity is None:
        return {}
    return {"owner": identity.name, "admin": identity.admin}


async def job_call(link: BrokerLink, op: ControlOp, args: dict,
                   identity: Identity | None) -> dict:
    """One job control call made for ``identity``; a broker error becomes a
    :class:`RequestFailed` with its status."""
    try:
        answer = await link.control(op, {**args, **caller_args(identity)},
                                    timeout_s=_CONTROL_TIMEOUT_S)
    except TimeoutError:
        raise RequestFailed(Status.NO_WORKER, f"the broker at {link.address} does not answer",
                            RETRY_AFTER_S) from None
    if not isinstance(answer, dict):
        raise RequestFailed(Status.INTERNAL, "the broker sent a malformed answer")
    if "error" in answer:
        try:
            status = Status(int(answer.get("code", 0)))
        except (TypeError, ValueError):
            status = Status.INTERNAL
        raise RequestFailed(status, str(answer["error"]), answer.get("retry_after_s"))
    return answer


def _task(link: BrokerLink, service: str, task: str) -> TaskDescription | None:
    try:
        return descriptions.find_task(link.descriptions, service, task)
    except descriptions.TaskNotFound as exc:
        if exc.status is Status.NOT_FOUND or not link.alive:
            return None
        raise RequestFailed(exc.status, str(exc)) from None


async def find_task(link: BrokerLink, service: str, task: str) -> TaskDescription:
    """``service``'s task ``task`` (:func:`~gateway.invoke.look_up`); 400 for a real-time
    endpoint; else :func:`~gateway.invoke.not_served`: 404 if the broker serves no such
    task."""
    found = await look_up(link, lambda: _task(link, service, task))
    if found is not None:
        return found
    try:
        return descriptions.find_task(link.descriptions, service, task)
    except descriptions.TaskNotFound as exc:
        raise not_served(link, exc.status, str(exc)) from None


async def submit_job(link: BrokerLink, service: str, task: str, inputs: Any,
                     idempotency_key: str | None, max_input_bytes: int,
                     identity: Identity | None) -> dict:
    """Check and submit a job owned by ``identity``; the broker's answer ``{"job", "created"}``
    (an idempotency key is the owner's: another owner's same key makes another job). While
    the gateway traces, the inputs carry the submission's span as their first entry (as a
    request's meta does), which the job's runs link to: stored with them, nothing else."""
    found = await find_task(link, service, task)
    try:
        blob, _ = codec.encode(validate_inputs(found.inputs, inputs), threshold=1 << 62)
    except InvalidInput as exc:
        raise RequestFailed(Status.BAD_REQUEST, str(exc)) from None
    except codec.CodecError as exc:
        raise RequestFailed(Status.BAD_REQUEST, f"inputs cannot be sent: {exc}") from None
    if link.tracing is not None:  # the job's runs link to this submission's span
        traceparent = link.tracing.submission(service, task)
        if traceparent:
            blob = with_trace(blob, traceparent)
    if len(blob) > max_input_bytes:
        raise RequestFailed(Status.PAYLOAD_TOO_LARGE, f"job inputs are {len(blob)} bytes "
                                                      f"encoded, at most {max_input_bytes}")
    args: dict[str, Any] = {"service": service, "task": task, "inputs": blob}
    if idempotency_key is not None:
        args["idempotency_key"] = idempotency_key
    return await job_call(link, ControlOp.JOB_SUBMIT, args, identity)
