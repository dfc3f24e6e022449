"""Job handles for the client SDK: ``job = client.submit("reports", "score_file", rows=x)``.

A :class:`Job` names one durable job on the cluster; ``job.status()``,
``job.result(timeout=)``, ``job.cancel()`` and ``job.retry()`` call the
gateway's ``/v1/jobs`` routes (msgpack bodies) over ``http://``, or its
``zeroserve.v1.Jobs`` service over ``grpc://``. Errors are the SDK's typed
exceptions (:mod:`zeroserve.client.errors`), plus :class:`JobFailed` and
:class:`JobCancelled` from ``result``.
"""
from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from zeroserve.client import payloads
from zeroserve.client.errors import ZeroserveError, from_grpc, no_answer

TERMINAL = ("succeeded", "failed", "cancelled")


class JobFailed(ZeroserveError):
    """The job ended ``failed`` after its attempts; ``message`` is the last error."""


class JobCancelled(ZeroserveError):
    """The job was cancelled; it has no result."""


class JobsApi:
    """The ``/v1/jobs`` routes over an ``HttpTransport`` (anything with its ``request``)."""

    def __init__(self, transport: Any, timeout_s: float = 30.0) -> None:
        self.transport = transport
        self.timeout_s = timeout_s

    def get(self, job_id: str) -> dict[str, Any]:
        return self.call("GET", job_path(job_id))

    def result(self, job_id: str) -> Any:
        return self.call("GET", job_path(job_id, "/result"))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.call("DELETE", job_path(job_id))

    def retry(self, job_id: str) -> dict[str, Any]:
        return self.call("POST", job_path(job_id, "/retry"), {})

    def call(self, method: str, path: str, body: Any = None,
             headers: Mapping[str, str] | None = None) -> Any:
        """One HTTP call; the decoded answer, or the typed exception of an error status
        (:class:`~zeroserve.client.errors.DeadlineExceeded` when no answer came in
        ``timeout_s``)."""
        payload = None if body is None else payloads.encode_inputs(body)
        started = time.monotonic()
        try:
            status, _, answer = self.transport.request(
                method, path, payload,
                {"Content-Type": payloads.MSGPACK, "Accept": payloads.MSGPACK, **(headers or {})},
                self.timeout_s)
        except TimeoutError:
            raise no_answer(time.monotonic() - started, self.timeout_s) from None
        if not 200 <= status < 300:
            raise payloads.http_error(status, answer)
        return payloads.decode_value(answer)

    def submit(self, service: str, endpoint: str, inputs: Mapping[str, Any],
               idempotency_key: str | None = None) -> Job:
        """Submit a job; the same ``idempotency_key`` always names the same job."""
        body: dict[str, Any] = {"service": service, "endpoint": endpoint, "inputs": dict(inputs)}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        answer = self.call("POST", "/v1/jobs", body)
        return Job(self, answer["id"], answer)

    def list(self, service: str | None = None, state: str | None = None, limit: int = 100,
             cursor: int | None = None) -> dict[str, Any]:
        """One page of jobs, oldest first: ``{"jobs": [...], "next_cursor": int | None}``."""
        return self.call("GET", list_path(service, state, limit, cursor))


class Job:
    """A handle on one job (see the module docstring); ``info`` is the last status seen."""

    def __init__(self, api: JobsApi | GrpcJobsApi, job_id: str,
                 info: dict[str, Any] | None = None) -> None:
        self.api = api
        self.id = job_id
        self.info = info or {}
        self._clock: Callable[[], float] = time.monotonic
        self._sleep: Callable[[float], None] = time.sleep

    def __repr__(self) -> str:
        return f"Job({self.id!r}, state={self.info.get('state')!r})"

    def status(self) -> dict[str, Any]:
        """State, attempts, progress, timestamps and last error."""
        self.info = self.api.get(self.id)
        return self.info

    def wait(self, timeout: float | None = None, poll_s: float = 0.05) -> dict[str, Any]:
        """Poll until the job has finished; return its status. ``TimeoutError`` after
        ``timeout`` seconds (None: no limit). Polls start at ``poll_s`` and slow to 1 s."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            info = self.status()
            if info["state"] in TERMINAL:
                return info
            if deadline is not None and self._clock() + poll_s > deadline:
                raise TimeoutError(f"job {self.id} is still {info['state']} after {timeout}s")
            self._sleep(poll_s)
            poll_s = min(poll_s * 1.5, 1.0)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job, then return the task's value; raise :class:`JobFailed` or
        :class:`JobCancelled` if it did not succeed, ``TimeoutError`` past ``timeout``."""
        info = self.wait(timeout)
        if info["state"] == "failed":
            raise JobFailed(409, f"job {self.id} failed after {info['attempts']} attempts: "
                                 f"{info.get('error')}")
        if info["state"] == "cancelled":
            raise JobCancelled(409, f"job {self.id} was cancelled")
        return self.api.result(self.id)

    def cancel(self) -> dict[str, Any]:
        """Cancel the job: a queued one never starts, a running one sees ``ctx.cancelled``."""
        self.info = self.api.cancel(self.id)
        return self.info

    def retry(self) -> dict[str, Any]:
        """Run a failed or cancelled job again, with all its attempts."""
        self.info = self.api.retry(self.id)
        return self.info


class GrpcJobsApi:
    """``zeroserve.v1.Jobs`` over a ``GrpcTransport``'s channel; the same calls as
    :class:`JobsApi`."""

    def __init__(self, transport: Any, timeout_s: float = 30.0) -> None:
        from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc

        self.stub = pb_grpc.JobsStub(transport.channel)
        self.options = {"timeout": timeout_s, "metadata": transport.metadata}

    def _rpc(self, method: str, request: Any) -> Any:
        import grpc

        try:
            return getattr(self.stub, method)(request, **self.options)
        except grpc.RpcError as exc:
            raise from_grpc(exc.code(), exc.details()) from None

    def _by_id(self, method: str, job_id: str) -> Any:
        from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb

        return self._rpc(method, pb.JobRequest(id=job_id))

    def get(self, job_id: str) -> dict[str, Any]:
        return job_dict(self._by_id("Get", job_id))

    def result(self, job_id: str) -> Any:
        return payloads.decode_value(self._by_id("Result", job_id).value)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return job_dict(self._by_id("Cancel", job_id))

    def retry(self, job_id: str) -> dict[str, Any]:
        return job_dict(self._by_id("Retry", job_id))

    def submit(self, service: str, endpoint: str, inputs: Mapping[str, Any],
               idempotency_key: str | None = None) -> Job:
        from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb

        reply = self._rpc("Submit", pb.SubmitJobRequest(
            service=service, endpoint=endpoint, inputs=payloads.encode_inputs(inputs),
            idempotency_key=idempotency_key))
        info = job_dict(reply.job)
        return Job(self, info["id"], info)

    def list(self, service: str | None = None, state: str | None = None, limit: int = 100,
             cursor: int | None = None) -> dict[str, Any]:
        from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb

        return job_page(self._rpc("List", pb.ListJobsRequest(
            service=service, state=state, limit=limit, cursor=cursor)))


def list_path(service: str | None, state: str | None, limit: int, cursor: int | None) -> str:
    """The ``GET /v1/jobs`` path of one page of a listing."""
    query = {k: v for k, v in (("service", service), ("state", state), ("limit", limit),
                               ("cursor", cursor)) if v is not None}
    return "/v1/jobs?" + urllib.parse.urlencode(query)


def job_page(reply: Any) -> dict[str, Any]:
    """A ``ListJobsReply`` as the HTTP route gives it: ``{"jobs", "next_cursor"}``."""
    return {"jobs": [job_dict(j) for j in reply.jobs],
            "next_cursor": reply.next_cursor if reply.HasField("next_cursor") else None}


def job_path(job_id: str, suffix: str = "") -> str:
    """The ``/v1/jobs/{id}`` path of a job (the id quoted as one segment), plus ``suffix``."""
    return f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}{suffix}"


def job_dict(message: Any) -> dict[str, Any]:
    """A Job message as the HTTP routes give it: every field, None where unset."""
    return {field.name: (getattr(message, field.name)
                         if not field.has_presence or message.HasField(field.name) else None)
            for field in message.DESCRIPTOR.fields}


def jobs_api(transport: Any, timeout_s: float = 30.0) -> JobsApi | GrpcJobsApi:
    """The jobs API over a client's transport: ``/v1/jobs`` over HTTP, ``zeroserve.v1.Jobs``
    over gRPC."""
    return JobsApi(transport, timeout_s) if hasattr(transport, "request") \
        else GrpcJobsApi(transport, timeout_s)
