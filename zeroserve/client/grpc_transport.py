"""The gRPC transports, sync and async: ``zeroserve.v1.Serving`` and ``zeroserve.v1.Jobs``
for calls and jobs, the OIP service for inference, on one HTTP/2 channel to a gateway at
``grpc://host:port`` (plain) or ``grpcs://host:port`` (TLS)."""
from __future__ import annotations

import contextlib
import functools
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from zeroserve.client.errors import from_grpc
from zeroserve.client.transport import SYSTEM_TLS, GrpcRequest, Operation, Tls
from zeroserve.grpc_gen import grpc_service_pb2_grpc as oip_grpc
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 2**31 - 1),
                   ("grpc.max_send_message_length", 2**31 - 1)]
DEFAULT_PORT = 8001


def target(url: str) -> str:
    """The ``host:port`` of a ``grpc(s)://host:port`` URL."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("grpc", "grpcs") or not parsed.hostname:
        raise ValueError(f"expected a grpc(s)://host:port URL, got {url!r}")
    host, port = parsed.hostname, parsed.port or DEFAULT_PORT
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def credentials(tls: Tls) -> grpc.ChannelCredentials:
    """TLS credentials: the system's roots or ``tls.ca_file``, and the client certificate."""
    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(root_certificates=read(tls.ca_file),
                                        private_key=read(tls.key_file),
                                        certificate_chain=read(tls.cert_file))


def _open(url: str, tls: Tls, secure: Callable[..., Any], insecure: Callable[..., Any]) -> Any:
    if url.startswith("grpcs://"):
        return secure(target(url), credentials(tls), options=CHANNEL_OPTIONS)
    return insecure(target(url), options=CHANNEL_OPTIONS)


@contextlib.contextmanager
def _grpc_errors() -> Iterator[None]:
    try:
        yield
    except grpc.RpcError as exc:
        raise from_grpc(exc.code(), exc.details()) from None


class _Stubs:
    """The services of one channel, by the names :class:`GrpcRequest` uses."""

    def __init__(self, channel: Any, api_key: str | None) -> None:
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.services = {"Serving": pb_grpc.ServingStub(channel),
                         "Jobs": pb_grpc.JobsStub(channel),
                         "Inference": oip_grpc.GRPCInferenceServiceStub(channel)}

    def calls(self, operation: Operation, timeout_s: float) -> Iterator[Callable[[], Any]]:
        """The operation's RPCs in turn, each made within what is left of ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        return (functools.partial(self._call, rpc, deadline) for rpc in operation.grpc())

    def _call(self, rpc: GrpcRequest, deadline: float) -> Any:
        return getattr(self.services[rpc.service], rpc.method)(
            rpc.message, timeout=deadline - time.monotonic(), metadata=self.metadata)


class GrpcTransport:
    """One channel (HTTP/2, multiplexed, thread-safe) to one gateway."""

    def __init__(self, url: str, api_key: str | None = None, tls: Tls = SYSTEM_TLS) -> None:
        self.url = url
        self.channel = _open(url, tls, grpc.secure_channel, grpc.insecure_channel)
        self._stubs = _Stubs(self.channel, api_key)

    def send(self, operation: Operation, timeout_s: float) -> Any:
        with _grpc_errors():
            return operation.from_grpc([call() for call in self._stubs.calls(operation,
                                                                             timeout_s)])

    def close(self) -> None:
        self.channel.close()


class AsyncGrpcTransport:
    """One grpc.aio channel to one gateway, for one event loop."""

    def __init__(self, url: str, api_key: str | None = None, tls: Tls = SYSTEM_TLS) -> None:
        self.url = url
        self.channel = _open(url, tls, grpc.aio.secure_channel, grpc.aio.insecure_channel)
        self._stubs = _Stubs(self.channel, api_key)

    async def send(self, operation: Operation, timeout_s: float) -> Any:
        with _grpc_errors():
            return operation.from_grpc([await call() for call in self._stubs.calls(operation,
                                                                                   timeout_s)])

    async def close(self) -> None:
        await self.channel.close()
