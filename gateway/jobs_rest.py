"""The jobs API over HTTP: ``/v1/jobs`` (submit, list), ``/v1/jobs/{id}`` (status, cancel),
``/v1/jobs/{id}/result`` and ``/v1/jobs/{id}/retry``. See docs/jobs.md.

Submissions are checked as :mod:`gateway.jobs_calls` says; each call is one
control call to the broker.
"""
from __future__ import annotations

from typing import Any

from gateway.errors import RequestFailed
from gateway.jobs_calls import job_call, submit_job
from gateway.rest import (
    _MSGPACK_TYPES,
    MSGPACK,
    BaseHandler,
    BodyHandler,
    answer_json,
    decode_body,
    sends_msgpack,
)
from zeroserve.wire import codec
from zeroserve.wire.envelope import Status
from zeroserve.wire.frontend import ControlOp

IDEMPOTENCY_HEADER = "Idempotency-Key"


def _with_links(job: dict) -> dict:
    base = f"/v1/jobs/{job['id']}"
    return {**job, "links": {"self": base, "result": f"{base}/result",
                             "retry": f"{base}/retry"}}


class _JobHandler(BaseHandler):
    """Shared parts: ``max_input_bytes``, answers in JSON (or msgpack when asked)."""

    metric_route = "jobs"

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
        self.finish(answer_json(value))

    async def job(self, op: ControlOp, job_id: str) -> dict:
        """Call ``op`` on job ``job_id``; 404 if it is another owner's, 403 if the caller may
        not use its service."""
        answer = await job_call(self.link, op, {"id": job_id}, self.identity)
        self.authorize(answer["job"]["service"])
        return answer


class JobsHandler(_JobHandler, BodyHandler):
    """``POST /v1/jobs`` submits; ``GET /v1/jobs?service=&state=&limit=&cursor=`` lists the
    caller's own jobs (every job for an admin key, or with API keys off)."""

    def _parse(self) -> dict:
        body = decode_body(self.body, sends_msgpack(self.request.headers),
                           self.settings["max_json_depth"]) if self.body else None
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
        answer = await submit_job(self.link, service, task, body.get("inputs", {}), key,
                                  self.max_input_bytes, self.identity)
        job = _with_links(answer["job"])
        self.set_header("Location", job["links"]["self"])
        self.answer(job, 202 if answer.get("created") else 200)

    async def get(self) -> None:
        service = self.get_query_argument("service", None)
        if service:
            self.authorize(service)
        args: dict[str, Any] = {"service": service, "state": self.get_query_argument(
            "state", None)}
        for name, key in (("limit", "limit"), ("cursor", "after")):
            raw = self.get_query_argument(name, None)
            if raw is not None:
                if not raw.isdigit() or int(raw) >= 2**63:
                    raise RequestFailed(Status.BAD_REQUEST, f"{name} must be an integer "
                                        "from 0 to 2**63-1")
                args[key] = int(raw)
        answer = await job_call(self.link, ControlOp.JOB_LIST, args, self.identity)
        jobs = [_with_links(j) for j in answer["jobs"]
                if self.access.visible(self.identity, [j["service"]])]
        self.answer({"jobs": jobs, "next_cursor": answer.get("next")})


class JobHandler(_JobHandler):
    """``GET /v1/jobs/{id}``: the job's status; ``DELETE``: cancel it."""

    async def get(self, job_id: str) -> None:
        self.answer(_with_links((await self.job(ControlOp.JOB_GET, job_id))["job"]))

    async def delete(self, job_id: str) -> None:
        await self.job(ControlOp.JOB_GET, job_id)  # 403 before anything changes
        answer = await job_call(self.link, ControlOp.JOB_CANCEL, {"id": job_id}, self.identity)
        self.answer(_with_links(answer["job"]))


class JobResultHandler(_JobHandler):
    """``GET /v1/jobs/{id}/result``: the task's return value (409 until it succeeded)."""

    async def get(self, job_id: str) -> None:
        answer = await self.job(ControlOp.JOB_RESULT, job_id)
        try:
            value = codec.decode(answer["result"])
        except codec.CodecError as exc:
            raise RequestFailed(Status.INTERNAL, f"stored result is undecodable: {exc}") \
                from None
        self.answer(value)


class JobRetryHandler(_JobHandler, BodyHandler):
    """``POST /v1/jobs/{id}/retry``: run a failed or cancelled job again, from attempt 1."""

    async def handle(self, job_id: str) -> None:  # type: ignore[override]
        await self.job(ControlOp.JOB_GET, job_id)
        answer = await job_call(self.link, ControlOp.JOB_RETRY, {"id": job_id}, self.identity)
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
