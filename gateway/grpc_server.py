"""The gateway's gRPC server: the Open Inference Protocol, zeroserve.v1.Serving and
zeroserve.v1.Jobs on grpc.aio, in the gateway's asyncio loop."""
from __future__ import annotations

from dataclasses import dataclass

import grpc

from gateway.accept import EventReport
from gateway.access import Access
from gateway.broker_link import BrokerLink
from gateway.grpc_messages import REPORT_INTERVAL_S, add_service
from gateway.jobs_grpc import JobsService
from gateway.oip_grpc import InferenceService
from gateway.oip_models import ServerIdentity
from gateway.serving_grpc import ServingService
from gateway.shm_regions import RegionRegistry
from zeroserve.config import StreamSettings
from zeroserve.grpc_gen import grpc_service_pb2, zeroserve_serving_pb2

MAX_MESSAGE_BYTES = 2**31 - 1  # answers: what tritonclient and perf_analyzer allow themselves


@dataclass(frozen=True)
class GrpcKeepalive:
    """Keep-alive pings to each client every ``interval_s``, the connection closed when one
    goes unanswered for ``timeout_s``; a connection without a call for ``max_idle_s`` is
    closed (GOAWAY), and one that has not finished the HTTP/2 handshake within
    ``handshake_s`` too. No maximum connection age: a busy connection lives on."""

    interval_s: float = 60.0
    timeout_s: float = 20.0
    max_idle_s: float = 60.0
    handshake_s: float = 10.0

    def options(self) -> list[tuple[str, int]]:
        return [("grpc.keepalive_time_ms", int(self.interval_s * 1000)),
                ("grpc.keepalive_timeout_ms", int(self.timeout_s * 1000)),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.max_connection_idle_ms", int(self.max_idle_s * 1000)),
                ("grpc.server_handshake_timeout_ms", int(self.handshake_s * 1000))]


async def start_server(link: BrokerLink, host: str, port: int, default_timeout_s: float,
                       max_timeout_s: float, access: Access | None = None,
                       max_job_input_bytes: int = 64 * 1024 * 1024,
                       reuse_port: bool = False,
                       max_request_bytes: int = MAX_MESSAGE_BYTES,
                       keepalive: GrpcKeepalive = GrpcKeepalive(),
                       tls: grpc.ServerCredentials | None = None,
                       stream: StreamSettings | None = None,
                       server_identity: ServerIdentity | None = None,
                       shm_regions: RegionRegistry | None = None) -> grpc.aio.Server:
    """Start serving on ``host:port`` in the running loop (TLS with ``tls``, else plain);
    raise OSError if it cannot bind. A request message larger than ``max_request_bytes``
    ends with RESOURCE_EXHAUSTED, one that does not parse with INVALID_ARGUMENT
    (:mod:`gateway.grpc_messages`). ``server_identity`` is what ServerMetadata answers;
    ``shm_regions`` the system shared memory registry (None: no shared memory)."""
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", min(max_request_bytes, MAX_MESSAGE_BYTES)),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", int(reuse_port)),
        *keepalive.options(),
    ])
    access = access or Access()
    malformed = EventReport(REPORT_INTERVAL_S)
    add_service(server, InferenceService(link, default_timeout_s, max_timeout_s, access, stream,
                                            server_identity or ServerIdentity(), shm_regions),
                grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"], malformed,
                apart={"ModelInfer": "raw_input_contents"})
    add_service(server, ServingService(link, default_timeout_s, max_timeout_s, access, stream),
                zeroserve_serving_pb2.DESCRIPTOR.services_by_name["Serving"], malformed)
    add_service(server, JobsService(link, access, max_job_input_bytes),
                zeroserve_serving_pb2.DESCRIPTOR.services_by_name["Jobs"], malformed)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = (server.add_secure_port(address, tls) if tls is not None
                 else server.add_insecure_port(address))
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server
