"""zeroserve's own gRPC service (``zeroserve.v1.Serving``): the REST route's calls over gRPC.

Values travel in the codec's msgpack form, as on the REST route with
``application/msgpack``, so that ``zeroserve.Client`` answers the same over
``grpc://`` as over ``http://``.
"""
from __future__ import annotations

import grpc

from gateway.access import Access
from gateway.broker_link import BrokerLink
from gateway.errors import RequestFailed
from gateway.grpc_calls import Meter, caller, decode_inputs, grpc_boundary, visible_services
from gateway.invoke import call, find_endpoint
from zeroserve.config import StreamSettings
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc
from zeroserve.wire import codec
from zeroserve.wire.envelope import Status, pack_map

INLINE = 1 << 62  # codec threshold: every tensor inside the one payload


class ServingService(pb_grpc.ServingServicer):
    """``Call`` and ``Services`` on the gateway's broker link."""

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
            info = await find_endpoint(self.link, request.service, request.endpoint)
            meter.name(info.service, info.name)
            value = await call(self.link, info, decode_inputs(request.inputs), timeout_s)
            try:
                return pb.CallReply(value=codec.encode(value, threshold=INLINE)[0])
            except codec.CodecError as exc:
                raise RequestFailed(Status.USER_ERROR,
                                    f"answer cannot be encoded: {exc}") from None

    @grpc_boundary
    async def Services(self, request: pb.ServicesRequest,
                       context: grpc.aio.ServicerContext) -> pb.ServicesReply:
        services = await visible_services(self.access, self.link, context)
        return pb.ServicesReply(services=pack_map({name: desc.to_map()
                                                   for name, desc in services.items()}),
                                broker_alive=self.link.alive)
