"""The gateway's gRPC methods, registered from their services' descriptors with a request
parser of our own.

The generated ``add_*Servicer_to_server`` functions register ``Message.FromString`` as
each method's request deserializer; when a client's bytes do not parse, grpc.aio logs the
``DecodeError`` with its traceback and ends the call with UNKNOWN. :func:`add_service`
registers the same methods with :func:`request_parser` instead, which hands the servicer
a :class:`MalformedRequest` in place of the message (one parse per message, as before);
:func:`gateway.grpc_calls.grpc_boundary` ends the call, or the stream, with
INVALID_ARGUMENT. Malformed requests are logged through an
:class:`~gateway.accept.EventReport`: the first, then at most one line per interval with a
count.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from gateway.accept import EventReport
from gateway.errors import RequestFailed
from zeroserve.wire.envelope import Status

log = logging.getLogger("zeroserve.gateway")

REPORT_INTERVAL_S = 5.0

_PARSE_FAILURES = (DecodeError, ValueError, RecursionError)

_HANDLERS: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


@dataclass(frozen=True)
class MalformedRequest:
    """What a servicer method receives in place of a request message whose bytes do not
    parse: the message type it should have been, why it is not one, and what the server's
    report of malformed requests says (``unreported``: how many to log now, this one
    included, or None to stay quiet; ``total``: how many this server has had)."""

    message_type: str
    reason: str
    unreported: int | None
    total: int

    def refuse(self, call: str) -> RequestFailed:
        """The failure (400: INVALID_ARGUMENT) that ends ``call`` (the method and the peer),
        logged in one line when the report says so."""
        failure = RequestFailed(Status.BAD_REQUEST,
                                f"request is not a valid {self.message_type}: {self.reason}")
        if self.unreported is not None:
            log.warning("gateway: refused malformed gRPC request (%s: %s); %d since the last "
                        "report, %d in all", call, failure, self.unreported, self.total)
        return failure


def request_parser(message: type[Message], report: EventReport,
                   clock: Callable[[], float] = time.monotonic
                   ) -> Callable[[bytes], Message | MalformedRequest]:
    """A request deserializer for grpc: the ``message`` its bytes hold, or a
    :class:`MalformedRequest` (counted in ``report`` at ``clock()``) when they hold none."""
    message_type = message.DESCRIPTOR.full_name
    parse = message.FromString

    def parse_request(data: bytes) -> Message | MalformedRequest:
        try:
            return parse(data)
        except _PARSE_FAILURES as exc:
            return MalformedRequest(
                message_type, f"{len(data)} bytes that do not parse ({type(exc).__name__})",
                report.note(clock()), report.total)
    return parse_request


def add_service(server: grpc.aio.Server, servicer: Any, service: ServiceDescriptor,
                report: EventReport) -> None:
    """Register every method of ``service`` on ``server``, answered by ``servicer``'s method
    of the same name, its requests parsed by :func:`request_parser` (counted in
    ``report``)."""
    handlers = {}
    for method in service.methods:
        make = _HANDLERS[method.client_streaming, method.server_streaming]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=request_parser(GetMessageClass(method.input_type), report),
            response_serializer=GetMessageClass(method.output_type).SerializeToString)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
