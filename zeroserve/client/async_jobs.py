"""Job handles for :class:`zeroserve.AsyncClient`: ``job = await client.submit(...)``, then
``await job.status()``, ``await job.result(timeout=)``, ``await job.cancel()``.

The same calls as :mod:`zeroserve.client.jobs`, awaited: the gateway's ``/v1/jobs`` routes
over ``http://``, its ``zeroserve.v1.Jobs`` service over ``grpc://``.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import grpc

from zeroserve.client import payloads
from zeroserve.client.errors import from_grpc
from zeroserve.client.jobs import (
    TERMINAL,
    JobCancelled,
    JobFailed,
    job_dict,
    job_page,
    job_path,
    list_path,
)
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc


class AsyncHttpJobs:
    """``/v1/jobs`` over an ``AsyncHttpTransport``."""

    def __init__(self, transport: Any, timeout_s: float) -> None:
        self.transport = transport
        self.timeout_s = timeout_s

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        payload = None if body is None else payloads.encode_inputs(body)
        status, _, answer = await self.transport._request(
            method, path, payload, {"Content-Type": payloads.MSGPACK, "Accept": payloads.MSGPACK},
            self.timeout_s)
        if not 200 <= status < 300:
            raise payloads.http_error(status, answer)
        return payloads.decode_value(answer)

    async def submit(self, service: str, endpoint: str, inputs: Mapping[str, Any],
                     idempotency_key: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"service": service, "endpoint": endpoint, "inputs": dict(inputs)}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return await self._call("POST", "/v1/jobs", body)

    async def get(self, job_id: str) -> dict[str, Any]:
        return await self._call("GET", job_path(job_id))

    async def result(self, job_id: str) -> Any:
        return await self._call("GET", job_path(job_id, "/result"))

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._call("DELETE", job_path(job_id))

    async def retry(self, job_id: str) -> dict[str, Any]:
        return await self._call("POST", job_path(job_id, "/retry"), {})

    async def list(self, service: str | None, state: str | None, limit: int,
                   cursor: int | None) -> dict[str, Any]:
        return await self._call("GET", list_path(service, state, limit, cursor))


class AsyncGrpcJobs:
    """``zeroserve.v1.Jobs`` over an ``AsyncGrpcTransport``'s channel."""

    def __init__(self, transport: Any, timeout_s: float) -> None:
        self.stub = pb_grpc.JobsStub(transport.channel)
        self.options = {"timeout": timeout_s, "metadata": transport.metadata}

    async def _rpc(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self.stub, method)(request, **self.options)
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc.code(), exc.details()) from None

    async def submit(self, service: str, endpoint: str, inputs: Mapping[str, Any],
                     idempotency_key: str | None) -> dict[str, Any]:
        reply = await self._rpc("Submit", pb.SubmitJobRequest(
            service=service, endpoint=endpoint, inputs=payloads.encode_inputs(inputs),
            idempotency_key=idempotency_key))
        return job_dict(reply.job)

    async def get(self, job_id: str) -> dict[str, Any]:
        return job_dict(await self._rpc("Get", pb.JobRequest(id=job_id)))

    async def result(self, job_id: str) -> Any:
        return payloads.decode_value((await self._rpc("Result", pb.JobRequest(id=job_id))).value)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return job_dict(await self._rpc("Cancel", pb.JobRequest(id=job_id)))

    async def retry(self, job_id: str) -> dict[str, Any]:
        return job_dict(await self._rpc("Retry", pb.JobRequest(id=job_id)))

    async def list(self, service: str | None, state: str | None, limit: int,
                   cursor: int | None) -> dict[str, Any]:
        return job_page(await self._rpc("List", pb.ListJobsRequest(
            service=service, state=state, limit=limit, cursor=cursor)))


class AsyncJob:
    """A handle on one job, for asyncio; ``info`` is the last status seen."""

    def __init__(self, api: AsyncHttpJobs | AsyncGrpcJobs, info: dict[str, Any]) -> None:
        self.api = api
        self.id = str(info["id"])
        self.info = info

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r}, state={self.info.get('state')!r})"

    async def status(self) -> dict[str, Any]:
        """State, attempts, progress, timestamps and last error."""
        self.info = await self.api.get(self.id)
        return self.info

    async def wait(self, timeout: float | None = None, poll_s: float = 0.05) -> dict[str, Any]:
        """Poll until the job has finished; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = await self.status()
            if info["state"] in TERMINAL:
                return info
            if deadline is not None and time.monotonic() + poll_s > deadline:
                raise TimeoutError(f"job {self.id} is still {info['state']} after {timeout}s")
            await asyncio.sleep(poll_s)
            poll_s = min(poll_s * 1.5, 1.0)

    async def result(self, timeout: float | None = None) -> Any:
        """Wait, then the task's value; :class:`JobFailed` / :class:`JobCancelled` otherwise."""
        info = await self.wait(timeout)
        if info["state"] == "failed":
            raise JobFailed(409, f"job {self.id} failed after {info['attempts']} attempts: "
                                 f"{info.get('error')}")
        if info["state"] == "cancelled":
            raise JobCancelled(409, f"job {self.id} was cancelled")
        return await self.api.result(self.id)

    async def cancel(self) -> dict[str, Any]:
        """Cancel: a queued job never starts, a running one sees ``ctx.cancelled``."""
        self.info = await self.api.cancel(self.id)
        return self.info

    async def retry(self) -> dict[str, Any]:
        """Run a failed or cancelled job again, with all its attempts."""
        self.info = await self.api.retry(self.id)
        return self.info
