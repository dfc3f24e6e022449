"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), on grpc.aio.

Runs in the gateway's asyncio loop next to the HTTP server and sends every call
through the same broker path (inference: :mod:`gateway.oip_infer`). Errors end a
call with a gRPC status and details (:func:`gateway.grpc_calls.grpc_boundary`); on
``ModelStreamInfer`` (:mod:`gateway.oip_stream`) they go in a response's ``error_message``
instead, so that the stream survives them.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc
import numpy as np

from gateway.access import Access
from gateway.broker_link import BrokerLink
from gateway.errors import RequestFailed
from gateway.grpc_calls import Meter, caller, grpc_boundary, visible_services
from gateway.grpc_messages import BytesAfter, BytesApart, kept_apart
from gateway.invoke import find_model
from gateway.oip_grpc_body import build_response, build_unary_response, parse_request
from gateway.oip_http import extensions, read_statistics
from gateway.oip_infer import infer
from gateway.oip_models import (
    ModelRef,
    ServerIdentity,
    model_names,
    repository_index,
    resolve,
    server_metadata,
    versions_of,
)
from gateway.oip_models import config as model_config
from gateway.oip_models import metadata as model_metadata
from gateway.oip_rest_body import InferRequest, write_shm_outputs
from gateway.oip_stats import statistics_message
from gateway.oip_stream import stream_infer
from gateway.shm_regions import (
    CallerRegions,
    RegionError,
    RegionRegistry,
    grpc_peer_host,
    owner_of,
)
from zeroserve.config import StreamSettings
from zeroserve.grpc_gen import grpc_service_pb2 as pb
from zeroserve.grpc_gen import grpc_service_pb2_grpc as pb_grpc
from zeroserve.grpc_gen import model_config_pb2 as config_pb
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import Status

log = logging.getLogger("zeroserve.gateway")
_NO_CUDA = ("CUDA shared memory is not supported by this server; use system shared memory "
            "(SystemSharedMemoryRegister)")


def _refuse_cuda() -> NoReturn:
    """Refuse a CUDA shared memory call (INVALID_ARGUMENT, as HTTP's 400), saying why: the
    extension is unlisted."""
    raise RequestFailed(Status.BAD_REQUEST, _NO_CUDA)


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The gRPC servicer: one per gateway, sharing its broker link."""

    def __init__(self, link: BrokerLink, default_timeout_s: float, max_timeout_s: float,
                 access: Access, stream: StreamSettings | None = None,
                 server: ServerIdentity | None = None,
                 shm_regions: RegionRegistry | None = None) -> None:
        self.link = link
        self.shm_regions = shm_regions
        self.server = server or ServerIdentity()
        self.access = access
        self.default_timeout_s = default_timeout_s
        self.max_timeout_s = max_timeout_s
        self.stream = stream or StreamSettings()

    @grpc_boundary
    async def ServerLive(self, request: pb.ServerLiveRequest,
                         context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @grpc_boundary
    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        ready = self.link.alive and any(s.workers for s in self.link.descriptions.values())
        return pb.ServerReadyResponse(ready=ready)

    @grpc_boundary
    async def ModelReady(self, request: pb.ModelReadyRequest,
                         context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        identity = caller(self.access, context)
        ref = resolve(request.name, self.link.descriptions)
        if ref is not None and identity is not None and not identity.allows(ref.service):
            ref = None
        at = None
        if ref is not None:
            version = int(request.version) if request.version.isdigit() else (
                ref.version if not request.version else 0)
            at = self.link.descriptions[ref.service].at(version)
        return pb.ModelReadyResponse(ready=at is not None and bool(at.workers))

    @grpc_boundary
    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        caller(self.access, context)
        return pb.ServerMetadataResponse(**server_metadata(self.server,
                                                           extensions(self.shm_regions)))

    @grpc_boundary
    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        ref, info = await self._model(request.name, request.version, context)
        known = self.link.descriptions.get(ref.service)
        doc = model_metadata(ref, info, None if known is None else [
            str(v) for v in known.served_versions()])
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=doc["name"], versions=doc["versions"], platform=doc["platform"],
            inputs=[tensor(**t) for t in doc["inputs"]],
            outputs=[tensor(**t) for t in doc["outputs"]])

    @grpc_boundary
    async def ModelConfig(self, request: pb.ModelConfigRequest,
                          context: grpc.aio.ServicerContext) -> pb.ModelConfigResponse:
        ref, info = await self._model(request.name, request.version, context)
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
        if "model_transaction_policy" in doc:
            cfg.model_transaction_policy.decoupled = True
        return pb.ModelConfigResponse(config=cfg)

    @grpc_boundary
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest,
                              context: grpc.aio.ServicerContext) -> pb.RepositoryIndexResponse:
        services = await visible_services(self.access, self.link, context)
        index = repository_index(services, request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in index])

    @grpc_boundary
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest,
                              context: grpc.aio.ServicerContext) -> pb.ModelStatisticsResponse:
        """Triton's statistics extension: every model the caller may see when ``name`` is
        empty, else that model's (:mod:`gateway.oip_stats`)."""
        if request.name:
            ref = (await self._model(request.name, request.version, context))[0]
            refs = [ref] if request.version else versions_of(ref, self.link.descriptions)
        else:
            refs = model_names(await visible_services(self.access, self.link, context))
        return statistics_message(await read_statistics(self.link, refs))

    @grpc_boundary
    async def ModelInfer(self, request: pb.ModelInferRequest | BytesApart,
                         context: grpc.aio.ServicerContext
                         ) -> pb.ModelInferResponse | BytesAfter:
        """One inference; a large request's raw inputs arrive as views of its bytes
        (:class:`~gateway.grpc_messages.BytesApart`), raw outputs are answered as views of
        their memory, serialized once (:class:`~gateway.grpc_messages.BytesAfter`)."""
        message, raw = kept_apart(request)
        with Meter("oip_grpc") as meter:
            ref, info = await self._model(message.model_name, message.model_version, context,
                                          by_traffic=True)
            meter.name(ref.service, ref.endpoint)
            return await infer(self.link, ref, info, _UnaryGrpcBody(
                message, context, self.default_timeout_s, self.max_timeout_s,
                self._shm(context), str(ref.version), raw))

    async def ModelStreamInfer(self, requests: AsyncIterator[pb.ModelInferRequest],
                               context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Triton's decoupled contract (:mod:`gateway.oip_stream`): every failure, a message
        that does not parse included, is answered in the stream, which carries on."""
        async for response in stream_infer(self, requests, context):
            yield response

    @grpc_boundary
    async def SystemSharedMemoryStatus(self, request: pb.SystemSharedMemoryStatusRequest,
                                       context: grpc.aio.ServicerContext
                                       ) -> pb.SystemSharedMemoryStatusResponse:
        """The caller's regions (:mod:`gateway.shm_regions`): all, or the one named."""
        regions = self._caller_regions(context)
        response = pb.SystemSharedMemoryStatusResponse()
        for region in regions.registry.status(regions.owner, request.name):
            response.regions[region.name].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(**region.status()))
        return response

    @grpc_boundary
    async def SystemSharedMemoryRegister(self, request: pb.SystemSharedMemoryRegisterRequest,
                                         context: grpc.aio.ServicerContext
                                         ) -> pb.SystemSharedMemoryRegisterResponse:
        regions = self._caller_regions(context)
        region = regions.registry.register(regions.owner, request.name, request.key,
                                           request.offset, request.byte_size)
        log.info("gateway: shared memory region '%s' (key %s, %d bytes at %d) registered by %s",
                 region.name, region.key, region.byte_size, region.offset, regions.owner)
        return pb.SystemSharedMemoryRegisterResponse()

    @grpc_boundary
    async def SystemSharedMemoryUnregister(self,
                                           request: pb.SystemSharedMemoryUnregisterRequest,
                                           context: grpc.aio.ServicerContext
                                           ) -> pb.SystemSharedMemoryUnregisterResponse:
        """Unregister the caller's region ``name``, or all of them when it is empty."""
        regions = self._caller_regions(context)
        gone = regions.registry.unregister(regions.owner, request.name)
        if gone:
            log.info("gateway: shared memory regions %s unregistered by %s", gone,
                     regions.owner)
        return pb.SystemSharedMemoryUnregisterResponse()

    @grpc_boundary
    async def CudaSharedMemoryStatus(self, request: pb.CudaSharedMemoryStatusRequest,
                                     context: grpc.aio.ServicerContext
                                     ) -> pb.CudaSharedMemoryStatusResponse:
        _refuse_cuda()

    @grpc_boundary
    async def CudaSharedMemoryRegister(self, request: pb.CudaSharedMemoryRegisterRequest,
                                       context: grpc.aio.ServicerContext
                                       ) -> pb.CudaSharedMemoryRegisterResponse:
        _refuse_cuda()

    @grpc_boundary
    async def CudaSharedMemoryUnregister(self, request: pb.CudaSharedMemoryUnregisterRequest,
                                         context: grpc.aio.ServicerContext
                                         ) -> pb.CudaSharedMemoryUnregisterResponse:
        _refuse_cuda()

    def _shm(self, context: grpc.aio.ServicerContext) -> CallerRegions | None:
        """The caller's shared memory regions; None when the gateway has none."""
        if self.shm_regions is None or not self.shm_regions.enabled:
            return None
        identity = caller(self.access, context)
        return CallerRegions(self.shm_regions, owner_of(
            None if identity is None else identity.name, grpc_peer_host(context.peer())))

    def _caller_regions(self, context: grpc.aio.ServicerContext) -> CallerRegions:
        regions = self._shm(context)
        if regions is None:
            raise RegionError("system shared memory is off on this gateway "
                              "(gateway.shm_key_prefix is empty)")
        return regions

    async def _model(self, name: str, version: str, context: grpc.aio.ServicerContext,
                     by_traffic: bool = False) -> tuple[ModelRef, EndpointDescription]:
        """The model's endpoint at ``version`` (none: see :func:`gateway.invoke.find_model`),
        if the caller's API key may use its service."""
        identity = caller(self.access, context)
        ref, info = await find_model(self.link, name, version, by_traffic)
        self.access.check(identity, ref.service)
        return ref, info

    async def _infer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext,
                     meter: Meter | None) -> pb.ModelInferResponse:
        """Run one inference; ``meter`` learns the endpoint once it is known."""
        ref, info = await self._model(request.model_name, request.model_version, context,
                                      by_traffic=True)
        if meter is not None:
            meter.name(ref.service, ref.endpoint)
        return await infer(self.link, ref, info, self.body(request, context, ref.version))

    def body(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext,
             version: int = 1) -> _GrpcBody:
        """How ``request`` is read and answered (naming ``version``, the model's version that
        runs it), and its deadline."""
        return _GrpcBody(request, context, self.default_timeout_s, self.max_timeout_s,
                         self._shm(context), str(version))


class _GrpcBody:
    """A ModelInferRequest in, a ModelInferResponse out (typed contents answered typed, raw
    answered raw); the deadline is the call's, else the default, and at most the request's
    ``timeout`` parameter (capped). Tensors in shared memory are read from and written to the
    caller's ``regions``."""

    def __init__(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext,
                 default_timeout_s: float, max_timeout_s: float,
                 regions: CallerRegions | None = None, version: str = "1",
                 raw_apart: list[memoryview] | None = None) -> None:
        self.request = request
        self.raw_apart = raw_apart  # its raw_input_contents, kept out of the message
        self.version = version
        self.regions = regions
        self.context = context
        self.default_timeout_s = default_timeout_s
        self.max_timeout_s = max_timeout_s
        self.typed = False

    def parse(self) -> InferRequest:
        parsed, self.typed = parse_request(self.request, self.raw_apart)
        return parsed

    def deadline_s(self, requested_us: int | None) -> float:
        remaining_s = self.context.time_remaining()
        timeout_s = self.default_timeout_s if remaining_s is None else remaining_s
        if requested_us is not None:
            timeout_s = min(timeout_s, requested_us / 1e6)
        return min(timeout_s, self.max_timeout_s)

    def encode(self, model: str, request: InferRequest,
               outputs: list[tuple[str, np.ndarray]]) -> pb.ModelInferResponse:
        write_shm_outputs(request, outputs, self.regions)
        return build_response(model, self.version, request, self.typed, outputs)


class _UnaryGrpcBody(_GrpcBody):
    """:class:`_GrpcBody` for a unary ``ModelInfer``: the same answer, its raw contents kept
    apart until grpc serializes it (:func:`gateway.oip_grpc_body.build_unary_response`)."""

    def encode(self, model: str, request: InferRequest,  # type: ignore[override]
               outputs: list[tuple[str, np.ndarray]]) -> pb.ModelInferResponse | BytesAfter:
        write_shm_outputs(request, outputs, self.regions)
        return build_unary_response(model, self.version, request, self.typed, outputs)
