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

A method may answer a :class:`BytesAfter` instead of its response message: the message and
the entries of its last field, a repeated ``bytes`` one, kept apart (views of the tensors'
memory); its serializer writes them after the message's own bytes, which is where protobuf
writes that field, so that the bytes sent are those of the whole message, with one copy of
each entry instead of three (into the message, its serialization, and ``bytes()`` before).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
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


@dataclass(frozen=True)
class BytesAfter:
    """A response ``message`` whose repeated ``bytes`` field number ``field`` holds
    ``entries`` (in order), kept out of the message: ``message`` has no entry of its own in
    that field, and no field numbered above it is set (protobuf writes known fields in
    number order, so the entries come last). The entries' memory must stay unchanged until
    the answer is serialized."""

    message: Message
    field: int
    entries: Sequence[bytes | memoryview]

    def serialize(self) -> bytes:
        """The bytes of ``message`` with ``entries`` in ``field``: what ``SerializeToString``
        of the whole message gives."""
        tag = _varint(self.field << 3 | 2)  # wire type 2: length-delimited
        parts: list[bytes | memoryview] = [self.message.SerializeToString()]
        for entry in self.entries:
            parts += (tag, _varint(len(entry)), entry)
        return b"".join(parts)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def response_serializer(message: type[Message]) -> Callable[[Message | BytesAfter], bytes]:
    """A response serializer for grpc: ``message``'s ``SerializeToString``, and
    :meth:`BytesAfter.serialize` for an answer given that way."""
    serialize = message.SerializeToString

    def serialize_response(response: Message | BytesAfter) -> bytes:
        if isinstance(response, BytesAfter):
            return response.serialize()
        return serialize(response)  # type: ignore[no-any-return]
    return serialize_response


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
    ``report``) and its answers written by :func:`response_serializer`."""
    handlers = {}
    for method in service.methods:
        make = _HANDLERS[method.client_streaming, method.server_streaming]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=request_parser(GetMessageClass(method.input_type), report),
            response_serializer=response_serializer(GetMessageClass(method.output_type)))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
