"""The job operations of the SDK (pure): the gateway's ``/v1/jobs`` routes (msgpack bodies)
over HTTP, its ``zeroserve.v1.Jobs`` service over gRPC, with the same answers."""
from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zeroserve.client import payloads
from zeroserve.client.operations import checked
from zeroserve.client.transport import GrpcRequest, HttpAnswer, HttpRequest, Operation
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb


@dataclass(frozen=True)
class JobOperation(Operation):
    """One job call: the route (``method path``, msgpack ``body``) and the ``Jobs`` RPC of
    the same (its request message made when sent), and how to read the RPC's reply as the
    route's answer."""

    method: str
    path: str
    body: Any
    rpc: str
    message: Callable[[], Any]
    reply: Callable[[Any], Any]

    def http(self, timeout_s: float) -> HttpRequest:
        return HttpRequest(self.method, self.path,
                           None if self.body is None else payloads.encode_inputs(self.body),
                           {"Content-Type": payloads.MSGPACK, "Accept": payloads.MSGPACK})

    def from_http(self, answer: HttpAnswer) -> Any:
        return payloads.decode_value(checked(answer, range(200, 300)).body)

    def grpc(self) -> Sequence[GrpcRequest]:
        return [GrpcRequest("Jobs", self.rpc, self.message())]

    def from_grpc(self, replies: Sequence[Any]) -> Any:
        return self.reply(replies[0])


def job_path(job_id: str, suffix: str = "") -> str:
    """The ``/v1/jobs/{id}`` path of a job (the id quoted as one segment), plus ``suffix``."""
    return f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}{suffix}"


def job_dict(message: Any) -> dict[str, Any]:
    """A Job message as the HTTP routes give it: every field, None where unset."""
    return {field.name: (getattr(message, field.name)
                         if not field.has_presence or message.HasField(field.name) else None)
            for field in message.DESCRIPTOR.fields}


def job_page(reply: Any) -> dict[str, Any]:
    """A ``ListJobsReply`` as the HTTP route gives it: ``{"jobs", "next_cursor"}``."""
    return {"jobs": [job_dict(j) for j in reply.jobs],
            "next_cursor": reply.next_cursor if reply.HasField("next_cursor") else None}


def submit_job(service: str, endpoint: str, inputs: Mapping[str, Any],
               idempotency_key: str | None) -> JobOperation:
    """Store a job; the same ``idempotency_key`` always names the same job."""
    body: dict[str, Any] = {"service": service, "endpoint": endpoint, "inputs": dict(inputs)}
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    return JobOperation("POST", "/v1/jobs", body, "Submit", lambda: pb.SubmitJobRequest(
        service=service, endpoint=endpoint, inputs=payloads.encode_inputs(inputs),
        idempotency_key=idempotency_key), lambda reply: job_dict(reply.job))


def get_job(job_id: str) -> JobOperation:
    """A job's status."""
    return JobOperation("GET", job_path(job_id), None, "Get", lambda: pb.JobRequest(id=job_id),
                        job_dict)


def job_result(job_id: str) -> JobOperation:
    """A succeeded job's value."""
    return JobOperation("GET", job_path(job_id, "/result"), None, "Result",
                        lambda: pb.JobRequest(id=job_id),
                        lambda reply: payloads.decode_value(reply.value))


def cancel_job(job_id: str) -> JobOperation:
    """Cancel a job; its status."""
    return JobOperation("DELETE", job_path(job_id), None, "Cancel",
                        lambda: pb.JobRequest(id=job_id), job_dict)


def retry_job(job_id: str) -> JobOperation:
    """Run a failed or cancelled job again; its status."""
    return JobOperation("POST", job_path(job_id, "/retry"), {}, "Retry",
                        lambda: pb.JobRequest(id=job_id), job_dict)


def list_jobs(service: str | None, state: str | None, limit: int,
              cursor: int | None) -> JobOperation:
    """One page of jobs, oldest first: ``{"jobs": [...], "next_cursor": int | None}``."""
    query = {k: v for k, v in (("service", service), ("state", state), ("limit", limit),
                               ("cursor", cursor)) if v is not None}
    return JobOperation("GET", "/v1/jobs?" + urllib.parse.urlencode(query), None, "List",
                        lambda: pb.ListJobsRequest(service=service, state=state, limit=limit,
                                                   cursor=cursor), job_page)
