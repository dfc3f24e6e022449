"""The error boundaries of the gateway's front ends, on real tornado and grpc.aio servers:
what a handler raises becomes the answer of gateway.errors, and a bug a logged 500."""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import tornado.testing
import tornado.web

from gateway.access import Access
from gateway.api_keys import ApiKeys, Identity
from gateway.errors import INTERNAL_MESSAGE, RequestFailed
from gateway.grpc_calls import grpc_boundary
from gateway.rest import BaseHandler, handler_args
from zeroserve.grpc_gen import grpc_service_pb2 as oip_pb
from zeroserve.grpc_gen import grpc_service_pb2_grpc as oip_grpc
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc
from zeroserve.schema import InvalidInput
from zeroserve.wire.envelope import Status
from zeroserve.wire.oip_tensors import TensorError

RAISED: dict[str, Exception] = {
    "full": RequestFailed(Status.QUEUE_FULL, "queue is full", retry_after=2),
    "tensor": TensorError("input 'x': shape [3] does not match [4]"),
    "schema": InvalidInput("x", "must be a list"),
    "bug": ZeroDivisionError("division by zero"),
}


class _Raising(BaseHandler):
    async def get(self, what: str) -> None:
        raise RAISED[what]


class TornadoBoundaryTest(tornado.testing.AsyncHTTPTestCase):
    def get_app(self) -> tornado.web.Application:
        args = handler_args(None, 1.0, 1.0, 1024)  # type: ignore[arg-type]
        keys = Access(ApiKeys({"0" * 64: Identity("a", frozenset("*"))}))
        return tornado.web.Application([
            (r"/raise/(\w+)", _Raising, args),
            (r"/keyed", _Raising, handler_args(None, 1.0, 1.0, 1024, keys)),  # type: ignore[arg-type]
        ])

    def _error(self, path: str, method: str = "GET") -> tuple[int, dict, Any]:
        response = self.fetch(path, method=method, raise_error=False,
                              body=b"" if method == "POST" else None)
        assert response.headers["Content-Type"] == "application/json"
        return response.code, json.loads(response.body), response.headers

    def test_a_failure_is_its_http_status_message_and_headers(self) -> None:
        status, body, headers = self._error("/raise/full")
        assert (status, body, headers["Retry-After"]) == (503, {"error": "queue is full"}, "2")

    def test_input_errors_are_400_with_their_message(self) -> None:
        assert self._error("/raise/tensor")[:2] == (400, {"error": str(RAISED["tensor"])})
        assert self._error("/raise/schema")[:2] == (400, {"error": str(RAISED["schema"])})

    def test_a_missing_key_is_401_with_how_to_authenticate(self) -> None:
        status, body, headers = self._error("/keyed")
        assert status == 401 and "API key" in body["error"]
        assert headers["WWW-Authenticate"] == "Bearer"

    def test_a_bug_is_a_500_with_a_message_and_one_log_line(self) -> None:
        with self.assertLogs("zeroserve.gateway", logging.ERROR) as logs:
            status, body, _ = self._error("/raise/bug")
        assert (status, body) == (500, {"error": INTERNAL_MESSAGE})
        assert len(logs.records) == 1 and "GET /raise/bug" in logs.records[0].getMessage()

    def test_tornados_own_errors_keep_their_status_and_reason(self) -> None:
        assert self._error("/raise/full", "POST")[:2] == (405, {"error": "Method Not Allowed"})


class _Serving(pb_grpc.ServingServicer):
    @grpc_boundary
    async def Call(self, request: pb.CallRequest,
                   context: grpc.aio.ServicerContext) -> pb.CallReply:
        raise RAISED[request.service]


class _Inference(oip_grpc.GRPCInferenceServiceServicer):
    @grpc_boundary
    async def ModelStreamInfer(self, requests: AsyncIterator[oip_pb.ModelInferRequest],
                               context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[oip_pb.ModelStreamInferResponse]:
        async for request in requests:
            yield oip_pb.ModelStreamInferResponse(
                infer_response=oip_pb.ModelInferResponse(id=request.id))
            raise RAISED[request.model_name]


async def _grpc_errors(cases: list[str]) -> list[tuple[grpc.StatusCode, str, int]]:
    """(code, details, responses before the error) of one Call and one stream per case."""
    server = grpc.aio.server()
    pb_grpc.add_ServingServicer_to_server(_Serving(), server)
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(_Inference(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    results = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            serving = pb_grpc.ServingStub(channel)
            inference = oip_grpc.GRPCInferenceServiceStub(channel)
            for case in cases:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await serving.Call(pb.CallRequest(service=case), timeout=5)
                results.append((info.value.code(), info.value.details() or "", 0))
                stream = inference.ModelStreamInfer(
                    iter([oip_pb.ModelInferRequest(model_name=case, id="r1")]), timeout=5)
                got = 0
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    async for _ in stream:
                        got += 1
                results.append((info.value.code(), info.value.details() or "", got))
    finally:
        await server.stop(None)
    return results


def test_grpc_failures_end_unary_and_streaming_calls_with_their_code_and_message(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="zeroserve.gateway"):
        results = asyncio.run(_grpc_errors(["full", "tensor", "bug"]))
    assert results == [
        (grpc.StatusCode.UNAVAILABLE, "queue is full", 0),
        (grpc.StatusCode.UNAVAILABLE, "queue is full", 1),
        (grpc.StatusCode.INVALID_ARGUMENT, str(RAISED["tensor"]), 0),
        (grpc.StatusCode.INVALID_ARGUMENT, str(RAISED["tensor"]), 1),
        (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, 0),
        (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, 1),
    ]
    logged = [r.getMessage() for r in caplog.records if r.name == "zeroserve.gateway"]
    assert len(logged) == 2 and "gRPC Call" in logged[0] and "gRPC ModelStreamInfer" in logged[1]
