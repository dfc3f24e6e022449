"""The jobs calls every front end makes (HTTP ``/v1/jobs`` and gRPC ``zeroserve.v1.Jobs``).

A submission is checked before the broker sees it: the service must serve the
task (404, or 400 for a real-time endpoint), the inputs must match the task's
schema (400), and their encoding must fit ``jobs.max_input_bytes`` (413). Each
call is one control call to the broker; the broker answers a submission only
once the job is durably stored.
"""
from __future__ import annotations

from typing import Any

from gateway.broker_link import BrokerLink
from gateway.invoke import RequestFailed
from zeroserve.schema import Field, InvalidInput, validate_inputs
from zeroserve.wire import codec
from zeroserve.wire.envelope import Status
from zeroserve.wire.frontend import ControlOp

_CONTROL_TIMEOUT_S = 10.0
IDEMPOTENCY_HEADER = "Idempotency-Key"


async def job_call(link: BrokerLink, op: ControlOp, args: dict) -> dict:
    """One job control call; a broker error becomes a :class:`RequestFailed` with its status."""
    try:
        answer = await link.control(op, args, timeout_s=_CONTROL_TIMEOUT_S)
    except TimeoutError:
        raise RequestFailed(Status.NO_WORKER,
                            f"the broker at {link.address} does not answer") from None
    if not isinstance(answer, dict):
        raise RequestFailed(Status.INTERNAL, "the broker sent a malformed answer")
    if "error" in answer:
        try:
            status = Status(int(answer.get("code", 0)))
        except (TypeError, ValueError):
            status = Status.INTERNAL
        raise RequestFailed(status, str(answer["error"]), answer.get("retry_after_s"))
    return answer


async def find_task(link: BrokerLink, service: str, task: str) -> list[Field]:
    """The input schema of ``service``'s task ``task`` (404 / 400 / 503 if there is none)."""
    for attempt in (1, 2):
        desc = link.services.get(service, {}).get("tasks", {}).get(task)
        if desc is not None:
            try:
                return [Field.from_description(d) for d in desc["inputs"]]
            except (KeyError, TypeError, ValueError):
                raise RequestFailed(Status.INTERNAL, f"task {service}/{task} has a bad "
                                                     "schema") from None
        if attempt == 1 and not await link.refresh_if_stale():
            break
    if not link.alive:
        raise RequestFailed(Status.NO_WORKER, f"the broker at {link.address} does not answer")
    info = link.services.get(service)
    if info is None:
        raise RequestFailed(Status.NOT_FOUND, f"unknown service '{service}'")
    if task in info.get("endpoints", {}):
        raise RequestFailed(Status.BAD_REQUEST, f"'{service}/{task}' is a real-time endpoint, "
                                                "not a task: call it directly")
    raise RequestFailed(Status.NOT_FOUND, f"service '{service}' has no task '{task}'")


async def submit_job(link: BrokerLink, service: str, task: str, inputs: Any,
                     idempotency_key: str | None, max_input_bytes: int) -> dict:
    """Check and submit a job; the broker's answer ``{"job", "created"}``."""
    fields = await find_task(link, service, task)
    try:
        blob, _ = codec.encode(validate_inputs(fields, inputs), threshold=1 << 62)
    except InvalidInput as exc:
        raise RequestFailed(Status.BAD_REQUEST, str(exc)) from None
    except codec.CodecError as exc:
        raise RequestFailed(Status.BAD_REQUEST, f"inputs cannot be sent: {exc}") from None
    if len(blob) > max_input_bytes:
        raise RequestFailed(Status.PAYLOAD_TOO_LARGE, f"job inputs are {len(blob)} bytes "
                                                      f"encoded, at most {max_input_bytes}")
    args: dict[str, Any] = {"service": service, "task": task, "inputs": blob}
    if idempotency_key is not None:
        args["idempotency_key"] = idempotency_key
    return await job_call(link, ControlOp.JOB_SUBMIT, args)
