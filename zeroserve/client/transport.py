"""The seam between the client API and the network: what a transport promises.

The clients describe each thing they ask a gateway as an :class:`Operation`, which knows its
HTTP and its gRPC form and how to read either answer (pure, no I/O). A transport sends one
operation and returns its outcome: the decoded value, or the typed exception of the error
answer (:mod:`zeroserve.client.errors`). Besides those, a transport raises only

- ``TimeoutError`` when no answer came within the time it was given (the client turns it
  into its own :class:`~zeroserve.client.errors.DeadlineExceeded`),
- :class:`~zeroserve.client.errors.Unreachable` when no connection could be made (nothing
  was sent, so the call may be retried),
- :class:`~zeroserve.client.errors.CallInterrupted` when the connection broke after the call
  was sent (it may have run: never sent again).

A stream (an endpoint that ``streams``) is not an operation: a transport's ``stream`` is a
generator (an async generator for the asyncio transports) of the stream's decoded chunk
values. It raises the typed exception of an error answer or error event, and the same
``TimeoutError``, :class:`~zeroserve.client.errors.Unreachable` and
:class:`~zeroserve.client.errors.CallInterrupted` (also for a stream that ends without its
end); leaving the iteration early closes the connection (HTTP) or cancels the RPC (gRPC),
which cancels the stream.

``http_transport`` and ``grpc_transport`` hold the four transports (sync and async of each);
tests pass their own to ``Client(transport=...)``.
"""
from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class HttpRequest:
    """An operation over HTTP: ``path`` is below the URL's own path and carries its query;
    ``body`` is bytes, or parts sent one after another (a large tensor's are views of its
    memory); the client waits ``grace_s`` past the call's deadline for the gateway's own 504."""

    method: str
    path: str
    body: bytes | Sequence[bytes | memoryview] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    grace_s: float = 0.0


@dataclass(frozen=True)
class HttpAnswer:
    """A gateway's HTTP answer; ``headers`` look names up case-insensitively."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class GrpcRequest:
    """One RPC of an operation over gRPC: ``service`` is ``Serving``, ``Jobs`` or
    ``Inference`` (the OIP service), ``method`` that service's method; ``metadata``: the
    RPC's own, sent with the client's."""

    service: str
    method: str
    message: Any
    metadata: tuple[tuple[str, str], ...] = ()
    trailing: bool = False  # the reply comes as a GrpcAnswer, with the trailing metadata


@dataclass(frozen=True)
class GrpcAnswer:
    """The reply of an RPC whose request asked for its trailing metadata (names lower case)."""

    reply: Any
    trailing: Mapping[str, str]


@dataclass(frozen=True)
class Tls:
    """TLS files for ``https://`` and ``grpcs://``: a CA bundle to trust instead of the
    system's, and a client certificate with its key (PEM paths; None: not used)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


SYSTEM_TLS = Tls()  # the system's CA roots, no client certificate


class Operation(abc.ABC):
    """One thing the client asks a gateway, in the forms of both protocols (pure).

    ``resendable`` says whether it may be sent again after its connection broke once it was
    sent, for what runs no endpoint; a call of an endpoint names it in :meth:`runs`.
    """

    resendable = False

    def runs(self) -> str | None:
        """The OIP model name (``service.endpoint``) of the endpoint this runs, if any: its
        declaration says whether the call may be sent again."""
        return None

    @abc.abstractmethod
    def http(self, timeout_s: float) -> HttpRequest:
        """The request, for a call that has ``timeout_s`` seconds left."""

    @abc.abstractmethod
    def from_http(self, answer: HttpAnswer) -> Any:
        """The value of an answer, or raises the typed exception of an error answer."""

    @abc.abstractmethod
    def grpc(self) -> Sequence[GrpcRequest]:
        """The RPCs, made in turn."""

    @abc.abstractmethod
    def from_grpc(self, replies: Sequence[Any]) -> Any:
        """The value of the RPCs' replies (gRPC errors are raised by the transport)."""


class Transport(Protocol):
    """A connection to one gateway, for :class:`zeroserve.Client`; thread-safe."""

    def send(self, operation: Operation, timeout_s: float) -> Any:
        """The outcome of ``operation``, within ``timeout_s`` (see the module docstring)."""

    def stream(self, service: str, endpoint: str, inputs: dict[str, Any], timeout_s: float,
               idle_timeout_s: float | None) -> Generator[Any, None, None]:
        """The chunks of a stream of ``service/endpoint`` (see the module docstring): the
        first within ``timeout_s``, each next within ``idle_timeout_s`` (None: the gateway's
        own idle limit), raising ``TimeoutError`` when one does not come in time."""

    def close(self) -> None:
        """Close the connections."""


class AsyncTransport(Protocol):
    """A connection to one gateway, for :class:`zeroserve.AsyncClient`; one event loop."""

    async def send(self, operation: Operation, timeout_s: float) -> Any:
        """The outcome of ``operation``, within ``timeout_s`` (see the module docstring)."""

    def stream(self, service: str, endpoint: str, inputs: dict[str, Any], timeout_s: float,
               idle_timeout_s: float | None) -> AsyncGenerator[Any, None]:
        """The chunks of a stream, as :meth:`Transport.stream`."""

    async def close(self) -> None:
        """Close the connections."""


def _transport_class(url: str, asynchronous: bool) -> Any:
    scheme = url.partition("://")[0]
    if scheme in ("http", "https"):
        from zeroserve.client import http_transport as http

        return http.AsyncHttpTransport if asynchronous else http.HttpTransport
    if scheme in ("grpc", "grpcs"):
        from zeroserve.client import grpc_transport as grpc

        return grpc.AsyncGrpcTransport if asynchronous else grpc.GrpcTransport
    raise ValueError(f"unsupported URL {url!r}: use http(s)://host:port or grpc(s)://host:port")


def open_transport(url: str, api_key: str | None, tls: Tls) -> Transport:
    """The transport of a URL: ``http(s)://host:port[/prefix]`` or ``grpc(s)://host:port``."""
    return _transport_class(url, asynchronous=False)(url, api_key, tls)


def open_async_transport(url: str, api_key: str | None, tls: Tls) -> AsyncTransport:
    """The asyncio transport of a URL, as :func:`open_transport`."""
    return _transport_class(url, asynchronous=True)(url, api_key, tls)
