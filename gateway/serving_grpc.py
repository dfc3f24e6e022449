"""zeroserve's own gRPC service (``zeroserve.v1.Serving``): the REST route's calls over gRPC.

Values travel in the codec's msgpack form, as on the REST route with
``application/msgpack``, so that ``zeroserve.Client`` answers the same over
``grpc://`` as over ``http://``. ``Stream`` sends a streaming endpoint's chunks, one reply
message each (:mod:`gateway.streams`); ``Call`` answers the other endpoints.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping

import grpc

from gateway.access import Access
from gateway.broker_link import BrokerLink
from gateway.errors import RequestFailed
from gateway.grpc_calls import Meter, caller, decode_inputs, grpc_boundary, visible_services
from gateway.invoke import call, find_endpoint
from gateway.request_log import request_id_of
from gateway.stages import REQUEST_ID_METADATA, STAGES_METADATA, stages_json, wants_stages
from gateway.streams import decode_chunk, open_stream, stream_limits, written
from zeroserve.config import StreamSettings
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc
from zeroserve.wire import codec
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import Status, pack_map, raw
from zeroserve.wire.stream import Chunk

INLINE = 1 << 62  # codec threshold: every tensor inside the one payload
TIMEOUT_METADATA = "x-zeroserve-timeout"  # seconds: Stream's wait for its first chunk
VERSION_METADATA = "x-zeroserve-version"  # the service version a Call names (none: the split)


class ServingService(pb_grpc.ServingServicer):
    """``Call``, ``Stream`` and ``Services`` on the gateway's broker link."""

    def __init__(self, link: BrokerLink, default_timeout_s: float, max_timeout_s: float,
                 access: Access, stream: StreamSettings | None = None) -> None:
        self.link = link
        self.access = access
        self.default_timeout_s = default_timeout_s
        self.max_timeout_s = max_timeout_s
        self.stream = stream or StreamSettings()

    @grpc_boundary
    async def Call(self, request: pb.CallRequest,
                   context: grpc.aio.ServicerContext) -> pb.CallReply:
        with Meter("grpc") as meter:
            remaining = context.time_remaining()
            timeout_s = min(self.default_timeout_s if remaining is None else remaining,
                            self.max_timeout_s)
            self.access.check(caller(self.access, context), request.service)
            info = await find_endpoint(self.link, request.service, request.endpoint,
                                       _version(context))
            meter.name(info.service, info.name)
            if info.streams:
                raise RequestFailed(Status.BAD_REQUEST, (
                    f"{info.service}.{info.name} is a streaming endpoint: use Stream"))
            metadata = _metadata(context)
            stages: list | None = [] if wants_stages(metadata.get(STAGES_METADATA)) else None
            try:
                value = await call(self.link, info, decode_inputs(request.inputs), timeout_s,
                                   stages)
            finally:
                if stages is not None:
                    context.set_trailing_metadata((
                        (REQUEST_ID_METADATA, request_id_of(metadata.get("x-request-id"))),
                        (STAGES_METADATA, stages_json(stages))))
            try:
                return pb.CallReply(value=codec.encode(value, threshold=INLINE)[0])
            except codec.CodecError as exc:
                raise RequestFailed(Status.USER_ERROR,
                                    f"answer cannot be encoded: {exc}") from None

    @grpc_boundary
    async def Stream(self, request: pb.CallRequest, context: grpc.aio.ServicerContext) -> None:
        """A streaming endpoint's chunks, one ``CallReply`` each. The first comes within the
        call's deadline (its ``x-zeroserve-timeout`` metadata, else the gRPC deadline, else
        the default), each next one within the idle limit; an error, before or after some
        chunks, ends the RPC with its code and message; a client that cancels the RPC, or
        does not read for the idle limit, cancels the stream."""
        with Meter("grpc") as meter:
            metadata = _metadata(context)
            self.access.check(caller(self.access, context), request.service)
            info = await find_endpoint(self.link, request.service, request.endpoint)
            meter.name(info.service, info.name)
            if not info.streams:
                raise RequestFailed(Status.BAD_REQUEST, (
                    f"{info.service}.{info.name} is not a streaming endpoint: use Call"))
            limits = stream_limits(self._first_chunk_s(context, metadata), self.stream,
                                   metadata.get)
            chunks = await open_stream(self.link, info, decode_inputs(request.inputs), limits)
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:  # a client's cancel raises CancelledError here
                    await written(context.write(pb.CallReply(value=_inline(info, chunk))),
                                  limits)

    def _first_chunk_s(self, context: grpc.aio.ServicerContext,
                       metadata: Mapping[str, str]) -> float:
        remaining = context.time_remaining()
        timeout_s = self.default_timeout_s if remaining is None else remaining
        given = metadata.get(TIMEOUT_METADATA)
        if given is not None:
            try:
                asked = float(given)
            except ValueError:
                asked = -1.0
            if not (math.isfinite(asked) and asked > 0):
                raise RequestFailed(Status.BAD_REQUEST, (
                    f"{TIMEOUT_METADATA} must be a positive number of seconds, got {given!r}"))
            timeout_s = min(timeout_s, asked)
        return min(timeout_s, self.max_timeout_s)

    @grpc_boundary
    async def Services(self, request: pb.ServicesRequest,
                       context: grpc.aio.ServicerContext) -> pb.ServicesReply:
        services = await visible_services(self.access, self.link, context)
        return pb.ServicesReply(services=pack_map({name: desc.to_map()
                                                   for name, desc in services.items()}),
                                broker_alive=self.link.alive)


def _version(context: grpc.aio.ServicerContext) -> int | None:
    """The service version the call's metadata names (None: none); INVALID_ARGUMENT for one
    that is not an integer of at least 1."""
    raw_version = _metadata(context).get(VERSION_METADATA, "").strip()
    if not raw_version:
        return None
    if not raw_version.isdigit() or int(raw_version) < 1:
        raise RequestFailed(Status.BAD_REQUEST, f"{VERSION_METADATA} must be an integer of at "
                                                f"least 1, got {raw_version!r}")
    return int(raw_version)


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {str(key).lower(): value for key, value in (context.invocation_metadata() or ())
            if isinstance(value, str)}


def _inline(info: EndpointDescription, chunk: Chunk) -> bytes:
    """A chunk's value as one payload with every tensor inline: its frames as they came when
    it has no tensor frames of its own, else decoded and encoded again."""
    if len(chunk.frames) == 1:
        return raw(chunk.frames[0])
    value = decode_chunk(chunk)
    try:
        return codec.encode(value, threshold=INLINE)[0]
    except codec.CodecError as exc:
        raise RequestFailed(Status.INTERNAL, f"a chunk of {info.service}.{info.name} cannot "
                                             f"be encoded: {exc}") from None

