"""The jobs API over HTTP: ``/v1/jobs`` (submit, list), ``/v1/jobs/{id}`` (status, cancel),
``/v1/jobs/{id}/result`` and ``/v1/jobs/{id}/retry``. See docs/jobs.md.

The gateway checks a submission before the broker sees it: the service must
serve the task (404, or 400 for a real-time endpoint), the inputs must match
the task's schema (400), and their encoding must fit ``jobs.max_input_bytes``
(413). Each call is one control call to the broker; the broker answers a
submission only once the job is durably stored.
"""
from __future__ import annotations

import json
from typing import Any

from gateway.broker_link import BrokerLink
from gateway.invoke import RequestFailed
from gateway.rest import _MSGPACK_TYPES, MSGPACK, BaseHandler, BodyHandler, to_json
from zeroserve import codec
from zeroserve import protocol as p
from zeroserve.protocol import Status
from zeroserve.schema import Field, InvalidInput, validate_inputs

_CONTROL_TIMEOUT_S = 10.0
IDEMPOTENCY_HEADER = "Idempotency-Key"


async def job_call(link: BrokerLink, op: p.ControlOp, args: dict) -> dict:
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
        raise RequestFailed(status, str(answer["error"]))
    return answer


def _with_links(job: dict) -> dict:
    base = f"/v1/jobs/{job['id']}"
    return {**job, "links": {"self": base, "result": f"{base}/result",
                             "retry": f"{base}/retry"}}


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


class _JobHandler(BaseHandler):
    """Shared parts: ``max_input_bytes``, answers in JSON (or msgpack when asked)."""

    def initialize(self, max_input_bytes: int, **args: Any) -> None:  # type: ignore[override]
        super().initialize(**args)
        self.max_input_bytes = max_input_bytes

    def answer(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        if any(t in self.request.headers.get("Accept", "") for t in _MSGPACK_TYPES):
            self.set_header("Content-Type", MSGPACK)
            self.finish(codec.encode(value, threshold=1 << 62)[0])
            return
        self.set_header("Content-Type", "application/json")
        try:
            self.finish(to_json(value))
        except (TypeError, ValueError) as exc:
            raise RequestFailed(Status.USER_ERROR,
                                f"answer cannot be sent as JSON: {exc}") from None

    async def job(self, op: p.ControlOp, job_id: str) -> dict:
        """Call ``op`` on job ``job_id``; 403 if the caller may not use its service."""
        answer = await job_call(self.link, op, {"id": job_id})
        self.authorize(answer["job"]["service"])
        return answer


class JobsHandler(_JobHandler, BodyHandler):
    """``POST /v1/jobs`` submits; ``GET /v1/jobs?service=&state=&limit=&cursor=`` lists."""

    def _parse(self) -> dict:
        ctype = self.request.headers.get("Content-Type", "application/json").split(";")[0]
        try:
            if ctype.strip().lower() in _MSGPACK_TYPES:
                body = codec.decode(self.body)
            else:
                body = json.loads(self.body or b"null")
        except (codec.CodecError, ValueError) as exc:
            raise RequestFailed(Status.BAD_REQUEST, f"body is not valid: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("service"), str) \
                or not isinstance(body.get("endpoint"), str):
            raise RequestFailed(Status.BAD_REQUEST, 'expected {"service", "endpoint", '
                                                    '"inputs", "idempotency_key"?}')
        return body

    async def handle(self) -> None:  # type: ignore[override]
        body = self._parse()
        service, task = body["service"], body["endpoint"]
        key = self.request.headers.get(IDEMPOTENCY_HEADER) or body.get("idempotency_key")
        self.authorize(service)
        fields = await find_task(self.link, service, task)
        try:
            inputs = validate_inputs(fields, body.get("inputs", {}))
            blob, _ = codec.encode(inputs, threshold=1 << 62)
        except InvalidInput as exc:
            raise RequestFailed(Status.BAD_REQUEST, str(exc)) from None
        except codec.CodecError as exc:
            raise RequestFailed(Status.BAD_REQUEST, f"inputs cannot be sent: {exc}") from None
        if len(blob) > self.max_input_bytes:
            raise RequestFailed(Status.PAYLOAD_TOO_LARGE, f"job inputs are {len(blob)} bytes "
                                                          f"encoded, at most "
                                                          f"{self.max_input_bytes}")
        args: dict[str, Any] = {"service": service, "task": task, "inputs": blob}
        if key is not None:
            args["idempotency_key"] = key
        answer = await job_call(self.link, p.ControlOp.JOB_SUBMIT, args)
        job = _with_links(answer["job"])
        self.set_header("Location", job["links"]["self"])
        self.answer(job, 202 if answer.get("created") else 200)

    async def get(self) -> None:
        try:
            service = self.get_query_argument("service", None)
            if service:
                self.authorize(service)
            args: dict[str, Any] = {"service": service, "state": self.get_query_argument(
                "state", None)}
            for name, key in (("limit", "limit"), ("cursor", "after")):
                raw = self.get_query_argument(name, None)
                if raw is not None:
                    if not raw.isdigit():
                        raise RequestFailed(Status.BAD_REQUEST, f"{name} must be an integer")
                    args[key] = int(raw)
            answer = await job_call(self.link, p.ControlOp.JOB_LIST, args)
            jobs = [_with_links(j) for j in answer["jobs"]
                    if self.access.visible(self.identity, [j["service"]])]
            self.answer({"jobs": jobs, "next_cursor": answer.get("next")})
        except RequestFailed as exc:
            self.fail(exc)


class JobHandler(_JobHandler):
    """``GET /v1/jobs/{id}``: the job's status; ``DELETE``: cancel it."""

    async def get(self, job_id: str) -> None:
        try:
            self.answer(_with_links((await self.job(p.ControlOp.JOB_GET, job_id))["job"]))
        except RequestFailed as exc:
            self.fail(exc)

    async def delete(self, job_id: str) -> None:
        try:
            await self.job(p.ControlOp.JOB_GET, job_id)  # 403 before anything changes
            answer = await job_call(self.link, p.ControlOp.JOB_CANCEL, {"id": job_id})
            self.answer(_with_links(answer["job"]))
        except RequestFailed as exc:
            self.fail(exc)


class JobResultHandler(_JobHandler):
    """``GET /v1/jobs/{id}/result``: the task's return value (409 until it succeeded)."""

    async def get(self, job_id: str) -> None:
        try:
            answer = await self.job(p.ControlOp.JOB_RESULT, job_id)
            try:
                value = codec.decode(answer["result"])
            except codec.CodecError as exc:
                raise RequestFailed(Status.INTERNAL, f"stored result is undecodable: {exc}") \
                    from None
            self.answer(value)
        except RequestFailed as exc:
            self.fail(exc)


class JobRetryHandler(_JobHandler, BodyHandler):
    """``POST /v1/jobs/{id}/retry``: run a failed or cancelled job again, from attempt 1."""

    async def handle(self, job_id: str) -> None:  # type: ignore[override]
        await self.job(p.ControlOp.JOB_GET, job_id)
        answer = await job_call(self.link, p.ControlOp.JOB_RETRY, {"id": job_id})
        self.answer(_with_links(answer["job"]), 202)


def job_routes(args: dict[str, Any], max_input_bytes: int) -> list:
    """The jobs routes; list them before the REST route (``/{service}/{endpoint}``)."""
    job_args = {**args, "max_input_bytes": max_input_bytes}
    return [
        (r"/v1/jobs", JobsHandler, job_args),
        (r"/v1/jobs/([^/]+)", JobHandler, job_args),
        (r"/v1/jobs/([^/]+)/result", JobResultHandler, job_args),
        (r"/v1/jobs/([^/]+)/retry", JobRetryHandler, job_args),
    ]
