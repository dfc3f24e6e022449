"""The gRPC transports, sync and async: ``zeroserve.v1.Serving`` and ``zeroserve.v1.Jobs``
for calls and jobs, the OIP service for inference, on one HTTP/2 channel to a gateway at
``grpc://host:port`` (plain) or ``grpcs://host:port`` (TLS). Streaming endpoints stream
over ``Serving/Stream``, one reply message a chunk."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
import urllib.parse
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Mapping
from typing import Any

import grpc

from zeroserve.client import payloads
from zeroserve.client.errors import from_grpc
from zeroserve.client.operations import GATEWAY_504_GRACE_S
from zeroserve.client.transport import SYSTEM_TLS, GrpcAnswer, GrpcRequest, Operation, Tls
from zeroserve.grpc_gen import grpc_service_pb2_grpc as oip_grpc
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 2**31 - 1),
                   ("grpc.max_send_message_length", 2**31 - 1)]
DEFAULT_PORT = 8001
TIMEOUT_METADATA = "x-zeroserve-timeout"  # the wait for a stream's first chunk
IDLE_METADATA = "x-zeroserve-stream-idle-timeout"  # the wait for each next one


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


def _lower(metadata: Any) -> dict[str, str]:
    return {str(k).lower(): v for k, v in (metadata or ()) if isinstance(v, str)}


async def _with_trailing(call: Any) -> GrpcAnswer:
    reply = await call
    return GrpcAnswer(reply, _lower(await call.trailing_metadata()))


class _Stubs:
    """The services of one channel, by the names :class:`GrpcRequest` uses."""

    def __init__(self, channel: Any, api_key: str | None, is_async: bool = False) -> None:
        self.is_async = is_async
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.serving = pb_grpc.ServingStub(channel)
        self.services = {"Serving": self.serving,
                         "Jobs": pb_grpc.JobsStub(channel),
                         "Inference": oip_grpc.GRPCInferenceServiceStub(channel)}

    def calls(self, operation: Operation, timeout_s: float) -> Iterator[Callable[[], Any]]:
        """The operation's RPCs in turn, each made within what is left of ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        return (functools.partial(self._call, rpc, deadline) for rpc in operation.grpc())

    def _call(self, rpc: GrpcRequest, deadline: float) -> Any:
        method = getattr(self.services[rpc.service], rpc.method)
        options = {"timeout": deadline - time.monotonic(),
                   "metadata": (*self.metadata, *rpc.metadata)}
        if not rpc.trailing:
            return method(rpc.message, **options)
        if self.is_async:
            return _with_trailing(method(rpc.message, **options))
        reply, call = method.with_call(rpc.message, **options)
        return GrpcAnswer(reply, _lower(call.trailing_metadata()))

    def stream(self, service: str, endpoint: str, inputs: Mapping[str, Any], timeout_s: float,
               idle_timeout_s: float | None) -> Any:
        """Start ``Serving/Stream``. It has no gRPC deadline, which would bound the whole
        stream: the limits go as metadata, for the gateway to keep."""
        metadata = [*self.metadata, (TIMEOUT_METADATA, f"{max(timeout_s, 0.001):.3f}")]
        if idle_timeout_s is not None:
            metadata.append((IDLE_METADATA, f"{max(idle_timeout_s, 0.001):.3f}"))
        request = pb.CallRequest(service=service, endpoint=endpoint,
                                 inputs=payloads.encode_inputs(inputs))
        return self.serving.Stream(request, metadata=tuple(metadata))


class _Waits:
    """The client's own bounds on a stream: ``timeout_s`` for the first chunk, then
    ``idle_timeout_s`` (None: no bound) for each next one, each with
    :data:`~zeroserve.client.operations.GATEWAY_504_GRACE_S` more, so that the gateway's own
    DEADLINE_EXCEEDED, which says which limit passed, comes first."""

    def __init__(self, timeout_s: float, idle_timeout_s: float | None) -> None:
        self.timeout_s, self.idle_timeout_s = timeout_s, idle_timeout_s
        self.chunks = 0

    def next_s(self) -> float | None:
        """How long to wait for the next chunk."""
        limit = self.timeout_s if self.chunks == 0 else self.idle_timeout_s
        return None if limit is None else limit + GATEWAY_504_GRACE_S

    def passed(self) -> TimeoutError:
        """What the transport raises when :meth:`next_s` passed with no chunk (the client
        turns it into its own DeadlineExceeded)."""
        if self.chunks == 0:
            what = f"no chunk came from the server in {self.timeout_s:g} s (the timeout)"
        else:
            what = (f"no chunk came from the server in {self.idle_timeout_s:g} s after chunk "
                    f"{self.chunks} (the idle timeout)")
        return TimeoutError(f"{what}; the client stopped waiting")


class _Watchdog:
    """Cancels a sync RPC when a wait it was armed for runs past its time (grpc's sync
    iterators take no timeout). One thread per stream, woken only when a wait must end
    sooner than the one it sleeps for, so that a burst of chunks costs no thread switches."""

    def __init__(self, cancel: Callable[[], Any]) -> None:
        self.fired = False
        self._cancel = cancel
        self._lock = threading.Condition()
        self._deadline: float | None = None
        self._wakes_at: float | None = None  # when the thread wakes; None: when notified
        self._stopped = False
        threading.Thread(target=self._watch, name="zeroserve-stream-watchdog",
                         daemon=True).start()

    def arm(self, seconds: float | None) -> None:
        """Cancel the RPC unless :meth:`arm` or :meth:`stop` comes within ``seconds``
        (None: never)."""
        with self._lock:
            self._deadline = None if seconds is None else time.monotonic() + seconds
            if self._deadline is not None and (self._wakes_at is None
                                               or self._deadline < self._wakes_at):
                self._lock.notify()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify()

    def _watch(self) -> None:
        with self._lock:
            while not self._stopped:
                self._wakes_at = self._deadline
                if self._deadline is None:
                    self._lock.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left <= 0:
                    self.fired = True
                    break
                self._lock.wait(left)
        if self.fired:
            self._cancel()


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

    def stream(self, service: str, endpoint: str, inputs: Mapping[str, Any], timeout_s: float,
               idle_timeout_s: float | None = None) -> Generator[Any, None, None]:
        """The decoded chunks of a streaming endpoint, in order: the first within
        ``timeout_s``, each next one within ``idle_timeout_s`` (None: the gateway's limit),
        else ``TimeoutError``. Raises the typed errors :meth:`send` raises; closing the
        generator cancels the RPC, which cancels the stream at the worker."""
        call = self._stubs.stream(service, endpoint, inputs, timeout_s, idle_timeout_s)
        waits, watchdog = _Waits(timeout_s, idle_timeout_s), _Watchdog(call.cancel)
        try:
            while True:
                watchdog.arm(waits.next_s())
                try:
                    reply = next(call)
                except StopIteration:
                    return
                except grpc.RpcError as exc:
                    if watchdog.fired:
                        raise waits.passed() from None
                    raise from_grpc(exc.code(), exc.details()) from None
                watchdog.arm(None)  # the caller's time with a chunk is not a wait
                waits.chunks += 1
                yield payloads.decode_value(reply.value)
        finally:
            watchdog.stop()
            call.cancel()

    def close(self) -> None:
        self.channel.close()


class AsyncGrpcTransport:
    """One grpc.aio channel to one gateway, for one event loop."""

    def __init__(self, url: str, api_key: str | None = None, tls: Tls = SYSTEM_TLS) -> None:
        self.url = url
        self.channel = _open(url, tls, grpc.aio.secure_channel, grpc.aio.insecure_channel)
        self._stubs = _Stubs(self.channel, api_key, is_async=True)

    async def send(self, operation: Operation, timeout_s: float) -> Any:
        with _grpc_errors():
            return operation.from_grpc([await call() for call in self._stubs.calls(operation,
                                                                                   timeout_s)])

    async def stream(self, service: str, endpoint: str, inputs: Mapping[str, Any],
                     timeout_s: float, idle_timeout_s: float | None = None
                     ) -> AsyncGenerator[Any, None]:
        """:meth:`GrpcTransport.stream` for asyncio: closing the generator (``aclose``)
        cancels the RPC."""
        call = self._stubs.stream(service, endpoint, inputs, timeout_s, idle_timeout_s)
        waits = _Waits(timeout_s, idle_timeout_s)
        try:
            while True:
                try:
                    reply = await asyncio.wait_for(call.read(), waits.next_s())
                except (TimeoutError, asyncio.TimeoutError):  # noqa: UP041 (two before 3.11)
                    raise waits.passed() from None
                except grpc.RpcError as exc:
                    raise from_grpc(exc.code(), exc.details()) from None
                if reply is grpc.aio.EOF:
                    return
                waits.chunks += 1
                yield payloads.decode_value(reply.value)
        finally:
            call.cancel()

    async def close(self) -> None:
        await self.channel.close()
