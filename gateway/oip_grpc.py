"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), on grpc.aio.

Runs in the gateway's asyncio loop next to the HTTP server and sends every call
through the same broker path. Errors end a call with a gRPC status and details;
on ``ModelStreamInfer`` they go in the response's ``error_message`` instead, so
that the stream survives them.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc

import zeroserve
from gateway.access import Access
from gateway.broker_link import BrokerLink, EndpointInfo
from gateway.grpc_status import abort, caller, visible_services
from gateway.invoke import RequestFailed, call, find_model
from gateway.metrics import observe
from gateway.oip_grpc_body import build_response, parse_request
from gateway.oip_http import EXTENSIONS
from gateway.oip_models import (
    VERSION,
    ModelRef,
    endpoint_inputs,
    endpoint_outputs,
    repository_index,
    resolve,
)
from gateway.oip_models import config as model_config
from gateway.oip_models import metadata as model_metadata
from gateway.oip_rest_body import select_outputs
from zeroserve.grpc_gen import grpc_service_pb2 as pb
from zeroserve.grpc_gen import grpc_service_pb2_grpc as pb_grpc
from zeroserve.grpc_gen import model_config_pb2 as config_pb
from zeroserve.wire.envelope import Status
from zeroserve.wire.oip_tensors import TensorError

log = logging.getLogger("zeroserve.gateway")



class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The gRPC servicer: one per gateway, sharing its broker link."""

    def __init__(self, link: BrokerLink, default_timeout_s: float, max_timeout_s: float,
                 access: Access) -> None:
        self.link = link
        self.access = access
        self.default_timeout_s = default_timeout_s
        self.max_timeout_s = max_timeout_s

    async def ServerLive(self, request: pb.ServerLiveRequest,
                         context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        ready = self.link.alive and any(s.get("workers") for s in self.link.services.values())
        return pb.ServerReadyResponse(ready=ready)

    async def ModelReady(self, request: pb.ModelReadyRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        try:
            identity = caller(self.access, context)
        except RequestFailed as exc:
            await abort(context, exc)
        ref = resolve(request.name, self.link.services)
        if ref is not None and identity is not None and not identity.allows(ref.service):
            ref = None
        ready = ref is not None and request.version in ("", VERSION) and bool(
            self.link.services[ref.service].get("workers"))
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        try:
            caller(self.access, context)
        except RequestFailed as exc:
            await abort(context, exc)
        return pb.ServerMetadataResponse(name="zeroserve", version=zeroserve.__version__,
                                         extensions=EXTENSIONS)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        try:
            ref, info = await self._model(request.name, request.version, context)
        except RequestFailed as exc:
            await abort(context, exc)
        doc = model_metadata(ref, info)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=doc["name"], versions=doc["versions"], platform=doc["platform"],
            inputs=[tensor(**t) for t in doc["inputs"]],
            outputs=[tensor(**t) for t in doc["outputs"]])

    async def ModelConfig(self, request: pb.ModelConfigRequest,
                          context: grpc.aio.ServicerContext) -> pb.ModelConfigResponse:
        try:
            ref, info = await self._model(request.name, request.version, context)
        except RequestFailed as exc:
            await abort(context, exc)
        doc = model_config(ref, info)
        cfg = config_pb.ModelConfig(name=doc["name"], platform=doc["platform"],
                                    backend=doc["backend"], max_batch_size=doc["max_batch_size"])
        for entry in doc["input"]:
            cfg.input.add(name=entry["name"], data_type=config_pb.DataType.Value(
                entry["data_type"]), dims=entry["dims"], optional=entry.get("optional", False))
        for entry in doc["output"]:
            cfg.output.add(name=entry["name"], data_type=config_pb.DataType.Value(
                entry["data_type"]), dims=entry["dims"])
        if "dynamic_batching" in doc:
            cfg.dynamic_batching.max_queue_delay_microseconds = \
                doc["dynamic_batching"]["max_queue_delay_microseconds"]
        return pb.ModelConfigResponse(config=cfg)

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest,
                              context: grpc.aio.ServicerContext) -> pb.RepositoryIndexResponse:
        services = await visible_services(self.access, self.link, context)
        index = repository_index(services, request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in index])

    async def ModelInfer(self, request: pb.ModelInferRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        started, labels = time.perf_counter(), ["", ""]
        try:
            response = await self._infer(request, context, labels)
        except RequestFailed as exc:
            observe(labels[0], labels[1], "oip_grpc", exc.status.http_status,
                    time.perf_counter() - started)
            await abort(context, exc)
            raise  # not reached: abort raises
        observe(labels[0], labels[1], "oip_grpc", 200, time.perf_counter() - started)
        return response

    async def ModelStreamInfer(self, requests: AsyncIterator[pb.ModelInferRequest],
                               context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Answers each request of the stream as it completes (not necessarily in order;
        responses carry the request's ``id``)."""
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        running: set[asyncio.Task] = set()

        async def answer(request: pb.ModelInferRequest) -> None:
            try:
                response = await self._infer(request, context, ["", ""])
                await answers.put(pb.ModelStreamInferResponse(infer_response=response))
            except RequestFailed as exc:
                await answers.put(_stream_error(request, str(exc)))
            except Exception:  # never leave a request of the stream unanswered
                log.exception("gateway: stream request %r failed", request.id)
                await answers.put(_stream_error(request, "internal error in the gateway"))

        async def read() -> None:
            async for request in requests:
                task = asyncio.create_task(answer(request))
                running.add(task)
                task.add_done_callback(running.discard)
            while running:
                await asyncio.gather(*running, return_exceptions=True)
            await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await answers.get()) is not None:
                yield item
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()

    async def _model(self, name: str, version: str, context: grpc.aio.ServicerContext
                     ) -> tuple[ModelRef, EndpointInfo]:
        """The model's endpoint, if the caller's API key may use its service."""
        identity = caller(self.access, context)
        ref, info = await find_model(self.link, name, version)
        self.access.check(identity, ref.service)
        return ref, info

    async def _infer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext,
                     labels: list[str]) -> pb.ModelInferResponse:
        """Run one inference; ``labels`` gets the endpoint's service and name once known."""
        ref, info = await self._model(request.model_name, request.model_version, context)
        labels[:] = [ref.service, ref.endpoint]
        remaining_s = context.time_remaining()
        try:
            parsed, typed = parse_request(request)
            inputs = endpoint_inputs(info, parsed.inputs)
        except TensorError as exc:
            raise RequestFailed(Status.BAD_REQUEST, str(exc)) from None
        timeout_s = self.default_timeout_s if remaining_s is None else remaining_s
        if parsed.timeout_us is not None:
            timeout_s = min(timeout_s, parsed.timeout_us / 1e6)
        value = await call(self.link, info, inputs, min(timeout_s, self.max_timeout_s))
        try:
            produced = endpoint_outputs(info, value)
        except TensorError as exc:
            raise RequestFailed(Status.USER_ERROR, str(exc)) from None
        try:
            return build_response(ref.name, VERSION, parsed, typed,
                                  select_outputs(produced, parsed.outputs))
        except TensorError as exc:
            raise RequestFailed(Status.BAD_REQUEST, str(exc)) from None


def _stream_error(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(error_message=message, infer_response=pb.ModelInferResponse(
        model_name=request.model_name, id=request.id))
