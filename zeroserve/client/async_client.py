"""The asyncio client: :class:`AsyncClient`, the same calls as :class:`zeroserve.Client`.

    async with zeroserve.AsyncClient("grpc://localhost:8001") as client:
        y = await client.call("mlp", "predict", x=np.zeros((1, 64), np.float32))
"""
from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
import numpy as np

from zeroserve.client import payloads
from zeroserve.client.aio_http import AsyncHttpConnectionPool
from zeroserve.client.async_jobs import AsyncGrpcJobs, AsyncHttpJobs, AsyncJob
from zeroserve.client.errors import Overloaded, from_grpc, no_answer, passed_while_retrying
from zeroserve.client.grpc_transport import CHANNEL_OPTIONS, auth_metadata, services_of, target
from zeroserve.client.http_transport import split_url
from zeroserve.client.retry import retry_delay
from zeroserve.grpc_gen import grpc_service_pb2 as oip_pb
from zeroserve.grpc_gen import grpc_service_pb2_grpc as oip_grpc
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc

T = TypeVar("T")


class AsyncHttpTransport:
    """The REST and OIP HTTP routes over kept-alive asyncio connections."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        host, port, self.prefix = split_url(url, "http")
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._pool = AsyncHttpConnectionPool(host, port, url)

    async def _request(self, method: str, path: str, body: bytes | None,
                       headers: dict[str, str], timeout_s: float
                       ) -> tuple[int, dict[str, str], bytes]:
        return await self._pool.request(method, self.prefix + path, body,
                                        {**self._auth, **headers}, timeout_s)

    async def call(self, service: str, endpoint: str, inputs: Mapping[str, Any],
                   timeout_s: float) -> Any:
        headers = {"Content-Type": payloads.MSGPACK, "Accept": payloads.MSGPACK,
                   payloads.TIMEOUT_HEADER: f"{timeout_s:.3f}"}
        status, reply_headers, body = await self._request(
            "POST", f"/{service}/{endpoint}", payloads.encode_inputs(inputs), headers,
            timeout_s + 1.0)
        if status != 200:
            raise payloads.http_error(status, body)
        if reply_headers.get("content-type", "").startswith(payloads.MSGPACK):
            return payloads.decode_value(body)
        return json.loads(body)

    async def infer(self, model: str, inputs: Mapping[str, Any], outputs: list[str] | None,
                    timeout_s: float) -> dict[str, np.ndarray]:
        body, length = payloads.infer_body(inputs, outputs)
        headers = {payloads.HEADER_LENGTH: str(length), "Content-Type": "application/octet-stream",
                   payloads.TIMEOUT_HEADER: f"{timeout_s:.3f}"}
        status, reply_headers, reply = await self._request(
            "POST", f"/v2/models/{urllib.parse.quote(model)}/infer", body, headers,
            timeout_s + 1.0)
        if status != 200:
            raise payloads.http_error(status, reply)
        length_header = reply_headers.get(payloads.HEADER_LENGTH.lower())
        return payloads.infer_outputs(reply, None if length_header is None else int(length_header))

    async def services(self, timeout_s: float) -> dict[str, Any]:
        status, _, body = await self._request("GET", "/v1/services", None, {}, timeout_s)
        if status != 200:
            raise payloads.http_error(status, body)
        return dict(json.loads(body)["services"])

    async def health(self, timeout_s: float) -> dict[str, Any]:
        status, _, body = await self._request("GET", "/readyz", None, {}, timeout_s)
        state = json.loads(body) if body else {}
        return {"live": True, "ready": status == 200, "services": state.get("services", {}),
                "reason": state.get("reason", "")}

    async def close(self) -> None:
        await self._pool.close()


class AsyncGrpcTransport:
    """``zeroserve.v1.Serving`` and the OIP service over one grpc.aio channel."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.metadata = auth_metadata(api_key)
        self.channel = grpc.aio.insecure_channel(target(url), options=CHANNEL_OPTIONS)
        self._serving = pb_grpc.ServingStub(self.channel)
        self._oip = oip_grpc.GRPCInferenceServiceStub(self.channel)

    def _options(self, timeout_s: float) -> dict[str, Any]:
        return {"timeout": timeout_s, "metadata": self.metadata}

    async def call(self, service: str, endpoint: str, inputs: Mapping[str, Any],
                   timeout_s: float) -> Any:
        request = pb.CallRequest(service=service, endpoint=endpoint,
                                 inputs=payloads.encode_inputs(inputs))
        try:
            reply = await self._serving.Call(request, **self._options(timeout_s))
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc.code(), exc.details()) from None
        return payloads.decode_value(reply.value)

    async def infer(self, model: str, inputs: Mapping[str, Any], outputs: list[str] | None,
                    timeout_s: float) -> dict[str, np.ndarray]:
        try:
            response = await self._oip.ModelInfer(payloads.infer_request(model, inputs, outputs),
                                                  **self._options(timeout_s))
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc.code(), exc.details()) from None
        return payloads.infer_response_outputs(response)

    async def services(self, timeout_s: float) -> dict[str, Any]:
        try:
            return services_of(await self._serving.Services(pb.ServicesRequest(),
                                                            **self._options(timeout_s)))
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc.code(), exc.details()) from None

    async def health(self, timeout_s: float) -> dict[str, Any]:
        try:
            ready = (await self._oip.ServerReady(oip_pb.ServerReadyRequest(),
                                                 **self._options(timeout_s))).ready
            services = services_of(await self._serving.Services(pb.ServicesRequest(),
                                                                **self._options(timeout_s)))
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc.code(), exc.details()) from None
        return {"live": True, "ready": ready,
                "services": {k: v.get("workers", 0) for k, v in services.items()},
                "reason": "" if ready else "no worker has registered, or no broker answers"}

    async def close(self) -> None:
        await self.channel.close()


class AsyncClient:
    """:class:`zeroserve.Client` for asyncio: the same URLs, calls, deadlines, retries and
    exceptions, with ``await``. Use one per event loop; ``async with`` closes it."""

    def __init__(self, url: str = "http://localhost:8000", timeout: float = 30.0,
                 retry: bool = True, api_key: str | None = None) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if url.startswith("http://"):
            self._transport: AsyncHttpTransport | AsyncGrpcTransport = \
                AsyncHttpTransport(url, api_key)
        elif url.startswith("grpc://"):
            self._transport = AsyncGrpcTransport(url, api_key)
        else:
            raise ValueError(f"unsupported URL {url!r}: use http://host:port or grpc://host:port")
        self.url = url
        self.timeout = timeout
        self.retry = retry

    async def call(self, service: str, endpoint: str, *, timeout: float | None = None,
                   **inputs: Any) -> Any:
        """Call ``service/endpoint`` with named inputs; return the endpoint's value."""
        return await self._with_retries(
            timeout, lambda left: self._transport.call(service, endpoint, inputs, left))

    async def infer(self, model: str, inputs: Mapping[str, Any],
                    outputs: list[str] | None = None, *,
                    timeout: float | None = None) -> dict[str, np.ndarray]:
        """Run an Open Inference Protocol model on named tensors; return its outputs."""
        return await self._with_retries(
            timeout, lambda left: self._transport.infer(model, inputs, outputs, left))

    async def submit(self, service: str, endpoint: str, *, idempotency_key: str | None = None,
                     **inputs: Any) -> AsyncJob:
        """Submit a durable job to task ``service/endpoint``; return its :class:`AsyncJob`."""
        api = self._jobs_api()
        return AsyncJob(api, await api.submit(service, endpoint, inputs, idempotency_key))

    async def jobs(self, service: str | None = None, state: str | None = None,
                   limit: int = 100, cursor: int | None = None) -> dict[str, Any]:
        """One page of stored jobs, as :meth:`zeroserve.Client.jobs`."""
        return await self._jobs_api().list(service, state, limit, cursor)

    def _jobs_api(self) -> AsyncHttpJobs | AsyncGrpcJobs:
        if isinstance(self._transport, AsyncHttpTransport):
            return AsyncHttpJobs(self._transport, self.timeout)
        return AsyncGrpcJobs(self._transport, self.timeout)

    async def services(self, timeout: float = 5.0) -> dict[str, Any]:
        """The services the cluster serves: ``{name: {"endpoints": {...}, "workers": n}}``."""
        return await self._transport.services(timeout)

    async def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """``{"live", "ready", "services": {name: workers}, "reason"}``."""
        return await self._transport.health(timeout)

    async def _with_retries(self, timeout: float | None,
                            attempt: Callable[[float], Awaitable[T]]) -> T:
        budget = timeout or self.timeout
        deadline = time.monotonic() + budget
        tries = 0
        last: Overloaded | None = None  # the overload answer being retried
        while True:
            started = time.monotonic()
            left = deadline - started
            if left <= 0:
                raise passed_while_retrying(last)
            try:
                return await attempt(left)
            except (TimeoutError, asyncio.TimeoutError):  # noqa: UP041 (two types before 3.11)
                raise no_answer(time.monotonic() - started, budget) from None
            except Overloaded as exc:
                delay = retry_delay(tries, deadline - time.monotonic(), random.random) \
                    if self.retry else None
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                tries, last = tries + 1, exc

    async def close(self) -> None:
        """Close the connections to the gateway."""
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
