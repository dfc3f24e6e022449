"""Durable async jobs over gRPC (``zeroserve.v1.Jobs``): the calls of the /v1/jobs routes."""
from __future__ import annotations

from typing import Any

import grpc

from gateway.access import Access
from gateway.api_keys import Identity
from gateway.broker_link import BrokerLink
from gateway.grpc_calls import caller, decode_inputs, grpc_boundary
from gateway.jobs_calls import job_call, submit_job
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc
from zeroserve.wire.descriptions import JOB_MAP_KEYS
from zeroserve.wire.frontend import ControlOp


def job_message(job: dict[str, Any]) -> pb.Job:
    """The Job message of the broker's job map (absent values stay unset)."""
    return pb.Job(**{k: job[k] for k in JOB_MAP_KEYS if job.get(k) is not None})


class JobsService(pb_grpc.JobsServicer):
    """Submit, Get, Result, Cancel, Retry and List on the gateway's broker link."""

    def __init__(self, link: BrokerLink, access: Access, max_input_bytes: int) -> None:
        self.link = link
        self.access = access
        self.max_input_bytes = max_input_bytes

    async def _job(self, op: ControlOp, job_id: str, identity: Identity | None) -> dict:
        answer = await job_call(self.link, ControlOp.JOB_GET, {"id": job_id}, identity)
        self.access.check(identity, answer["job"]["service"])  # before anything changes
        return answer if op is ControlOp.JOB_GET else \
            await job_call(self.link, op, {"id": job_id}, identity)

    async def _run(self, context: grpc.aio.ServicerContext, op: ControlOp,
                   job_id: str) -> dict:
        return await self._job(op, job_id, caller(self.access, context))

    @grpc_boundary
    async def Submit(self, request: pb.SubmitJobRequest,
                     context: grpc.aio.ServicerContext) -> pb.SubmitJobReply:
        identity = caller(self.access, context)
        self.access.check(identity, request.service)
        inputs = decode_inputs(request.inputs) if request.inputs else {}
        key = request.idempotency_key if request.HasField("idempotency_key") else None
        answer = await submit_job(self.link, request.service, request.endpoint, inputs,
                                  key, self.max_input_bytes, identity)
        return pb.SubmitJobReply(job=job_message(answer["job"]),
                                 created=bool(answer.get("created")))

    @grpc_boundary
    async def Get(self, request: pb.JobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        return job_message((await self._run(context, ControlOp.JOB_GET, request.id))["job"])

    @grpc_boundary
    async def Result(self, request: pb.JobRequest,
                     context: grpc.aio.ServicerContext) -> pb.JobResult:
        answer = await self._run(context, ControlOp.JOB_RESULT, request.id)
        return pb.JobResult(value=bytes(answer["result"]))

    @grpc_boundary
    async def Cancel(self, request: pb.JobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        return job_message((await self._run(context, ControlOp.JOB_CANCEL, request.id))["job"])

    @grpc_boundary
    async def Retry(self, request: pb.JobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        return job_message((await self._run(context, ControlOp.JOB_RETRY, request.id))["job"])

    @grpc_boundary
    async def List(self, request: pb.ListJobsRequest,
                   context: grpc.aio.ServicerContext) -> pb.ListJobsReply:
        args: dict[str, Any] = {}
        for field, key in (("service", "service"), ("state", "state"), ("limit", "limit"),
                           ("cursor", "after")):
            if request.HasField(field):
                args[key] = getattr(request, field)
        identity = caller(self.access, context)
        if "service" in args:
            self.access.check(identity, args["service"])
        answer = await job_call(self.link, ControlOp.JOB_LIST, args, identity)
        reply = pb.ListJobsReply(jobs=[job_message(j) for j in answer["jobs"]
                                       if self.access.visible(identity, [j["service"]])])
        if answer.get("next") is not None:
            reply.next_cursor = int(answer["next"])
        return reply
