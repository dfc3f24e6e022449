"""The client's gRPC transport: ``zeroserve.v1.Serving`` for calls, the OIP service for infer."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
import msgpack
import numpy as np

from zeroserve.client import payloads
from zeroserve.client.errors import from_grpc
from zeroserve.client.http_transport import split_url
from zeroserve.grpc_gen import grpc_service_pb2 as oip_pb
from zeroserve.grpc_gen import grpc_service_pb2_grpc as oip_grpc
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 2**31 - 1),
                   ("grpc.max_send_message_length", 2**31 - 1)]


def target(url: str) -> str:
    """The ``host:port`` of a ``grpc://host:port`` URL."""
    host, port, _ = split_url(url, "grpc")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries an API key (none without a key)."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def services_of(reply: pb.ServicesReply) -> dict[str, Any]:
    return dict(msgpack.unpackb(reply.services, raw=False))


class GrpcTransport:
    """One channel (HTTP/2, multiplexed, thread-safe) to one gateway."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url = url
        self.metadata = auth_metadata(api_key)
        self.channel = grpc.insecure_channel(target(url), options=CHANNEL_OPTIONS)
        self._serving = pb_grpc.ServingStub(self.channel)
        self._oip = oip_grpc.GRPCInferenceServiceStub(self.channel)

    def _options(self, timeout_s: float) -> dict[str, Any]:
        return {"timeout": timeout_s, "metadata": self.metadata}

    def call(self, service: str, endpoint: str, inputs: Mapping[str, Any],
             timeout_s: float) -> Any:
        request = pb.CallRequest(service=service, endpoint=endpoint,
                                 inputs=payloads.encode_inputs(inputs))
        try:
            reply = self._serving.Call(request, **self._options(timeout_s))
        except grpc.RpcError as exc:
            raise from_grpc(exc.code(), exc.details()) from None
        return payloads.decode_value(reply.value)

    def infer(self, model: str, inputs: Mapping[str, Any], outputs: list[str] | None,
              timeout_s: float) -> dict[str, np.ndarray]:
        try:
            response = self._oip.ModelInfer(payloads.infer_request(model, inputs, outputs),
                                            **self._options(timeout_s))
        except grpc.RpcError as exc:
            raise from_grpc(exc.code(), exc.details()) from None
        return payloads.infer_response_outputs(response)

    def services(self, timeout_s: float) -> dict[str, Any]:
        try:
            return services_of(self._serving.Services(pb.ServicesRequest(),
                                                      **self._options(timeout_s)))
        except grpc.RpcError as exc:
            raise from_grpc(exc.code(), exc.details()) from None

    def health(self, timeout_s: float) -> dict[str, Any]:
        try:
            ready = self._oip.ServerReady(oip_pb.ServerReadyRequest(),
                                          **self._options(timeout_s)).ready
            services = services_of(self._serving.Services(pb.ServicesRequest(),
                                                          **self._options(timeout_s)))
        except grpc.RpcError as exc:
            raise from_grpc(exc.code(), exc.details()) from None
        return {"live": True, "ready": ready,
                "services": {k: v.get("workers", 0) for k, v in services.items()},
                "reason": "" if ready else "no worker has registered, or no broker answers"}

    def close(self) -> None:
        self.channel.close()
