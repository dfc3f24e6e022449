"""What the gateway's gRPC servicer methods share: the error boundary that ends a failed
call (or one whose request does not parse) with its gRPC code, the metrics of a call, who
makes it, and its msgpack inputs."""
from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
from google.protobuf.message import Message

from gateway.access import Access
from gateway.api_keys import Identity
from gateway.broker_link import BrokerLink
from gateway.errors import RequestFailed, failure_of, grpc_code, http_status, known_failure
from gateway.grpc_messages import MalformedRequest, kept_apart
from gateway.metrics import observe
from zeroserve.wire import codec
from zeroserve.wire.envelope import Status

if TYPE_CHECKING:
    from zeroserve.tracing.spans import GatewayTracer

Method = TypeVar("Method", bound=Callable[..., Any])
_TRACED = frozenset({"Call", "Stream", "ModelInfer", "Submit"})  # calls of a service: spans when on


def grpc_boundary(method: Method) -> Method:
    """Decorate a grpc.aio servicer method (unary, or a server-streaming async generator) so
    that every failure ends its call with a gRPC code and a message: a known failure
    (:func:`gateway.errors.known_failure`) with its own, anything else with INTERNAL, logged
    once with the method, the peer and the request's id. A request that does not parse
    (:class:`~gateway.grpc_messages.MalformedRequest`; in a client stream, any of its
    messages) ends the call with INVALID_ARGUMENT before the method sees it."""
    name = method.__name__
    traced = name in _TRACED

    def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Message):  # the hot path: one cheap check
            return request
        if isinstance(request, MalformedRequest):
            raise request.refuse(f"gRPC {name} from {context.peer()}")
        if isinstance(request, AsyncIterator):
            return _refusing_malformed(request, f"gRPC {name} from {context.peer()}")
        return request

    async def abort(context: grpc.aio.ServicerContext, request: Any, exc: Exception) -> None:
        request_id = getattr(kept_apart(request)[0], "id", "")
        where = f"gRPC {name} from {context.peer()}" + (
            f" (request {request_id!r})" if isinstance(request_id, str) and request_id else "")
        failure = failure_of(exc, where)
        await context.abort(grpc_code(failure.status), str(failure))

    if inspect.isasyncgenfunction(method):
        @functools.wraps(method)
        async def streaming(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            span = CallSpan.of(self, context) if traced else None
            try:
                request = checked(request, context)
                async with contextlib.aclosing(method(self, request, context)) as items:
                    async for item in items:
                        yield item
            except grpc.aio.AbortError:  # already ended with its status
                raise
            except Exception as exc:
                await abort(context, request, exc)
            finally:
                if span is not None:
                    span.end()
        return cast(Method, streaming)

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        span = CallSpan.of(self, context) if traced else None
        try:
            return await method(self, checked(request, context), context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, request, exc)
        finally:
            if span is not None:
                span.end()
    return cast(Method, unary)


class CallSpan:
    """The gateway's span of one gRPC call while tracing is on (``zeroserve.tracing``),
    current until :meth:`end`: the child of the trace that the call's ``traceparent``
    metadata names, named by the ``traceparent`` trailing metadata of its answer, ended with
    the call's code."""

    def __init__(self, tracing: GatewayTracer, context: grpc.aio.ServicerContext) -> None:
        metadata = {str(key).lower(): value for key, value in
                    (context.invocation_metadata() or ()) if isinstance(value, str)}
        self._tracing, self._context = tracing, context
        self._span, self._token = tracing.begin("grpc", metadata.get)
        context.set_trailing_metadata((("traceparent", tracing.traceparent(self._span)),))

    @classmethod
    def of(cls, servicer: Any, context: grpc.aio.ServicerContext) -> CallSpan | None:
        """The span of a call of ``servicer`` (one with a broker ``link``: tests give some
        without); None while the gateway's tracing is off."""
        tracing = getattr(getattr(servicer, "link", None), "tracing", None)
        return None if tracing is None else cls(tracing, context)

    def end(self) -> None:
        """The call ended: with the code it was aborted with, else OK."""
        code = self._context.code()
        if not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.OK
        self._tracing.end(self._span, None, code.value[0], self._token)


async def _refusing_malformed(requests: AsyncIterator[Any], call: str) -> AsyncIterator[Any]:
    """The messages of a client stream, up to one that does not parse: that one raises its
    :class:`~gateway.errors.RequestFailed`."""
    async for request in requests:
        if isinstance(request, MalformedRequest):
            raise request.refuse(call)
        yield request


class Meter:
    """Counts one call in the gateway's metrics when the ``with`` block ends: its status (200,
    or its failure's HTTP status), its latency and the endpoint it reached (empty until
    :meth:`name` is called). A call cancelled by its client is not counted."""

    def __init__(self, route: str) -> None:
        self.route = route
        self.service = self.endpoint = ""
        self._started = time.perf_counter()

    def name(self, service: str, endpoint: str) -> None:
        """The endpoint the call reached."""
        self.service, self.endpoint = service, endpoint

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None and not isinstance(exc, Exception):
            return
        failure = None if exc is None else known_failure(exc)
        status = 200 if exc is None else http_status(
            Status.INTERNAL if failure is None else failure.status)
        observe(self.service, self.endpoint, self.route, status,
                time.perf_counter() - self._started)


def decode_inputs(blob: bytes) -> Any:
    """A call's or a job's inputs, sent in the codec's msgpack form; 400 if they do not
    decode."""
    try:
        return codec.decode(blob)
    except codec.CodecError as exc:
        raise RequestFailed(Status.BAD_REQUEST, f"inputs are not valid msgpack: {exc}") from None


def caller(access: Access, context: grpc.aio.ServicerContext) -> Identity | None:
    """Who makes the call, from the API key in its metadata (None when keys are off); raises
    :class:`~gateway.errors.RequestFailed` (401) when keys are on and it has no valid one."""
    if not access.enforced:
        return None
    return access.identify({str(key).lower(): value
                            for key, value in (context.invocation_metadata() or ())
                            if isinstance(value, str)})


async def visible_services(access: Access, link: BrokerLink,
                           context: grpc.aio.ServicerContext) -> dict[str, Any]:
    """The broker's services (asked again when older than a second) that the caller may see;
    raises :class:`~gateway.errors.RequestFailed` (401) when keys are on and it has no
    valid one."""
    return await access.visible_services(link, caller(access, context))
