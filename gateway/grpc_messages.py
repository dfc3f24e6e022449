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

The other way, a method may have a repeated ``bytes`` field of its request kept apart
(``add_service``'s ``apart``): a request of 64 KiB or more is scanned field by field at its
top level, that field's entries are taken as views of the request's bytes, and protobuf
parses the rest; the method receives a :class:`BytesApart`. What protobuf would make of the
whole message is unchanged (the other fields keep their order); a request the scan cannot
read is parsed whole, as before. This saves two copies of each entry (into the parsed
message, and out of it as ``bytes``).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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


@dataclass(frozen=True)
class BytesApart:
    """A request ``message`` parsed without the entries of one repeated ``bytes`` field (the
    one :func:`request_parser` keeps apart), which are ``entries``: views of the request's
    bytes, in order. A method given one reads ``entries`` in place of that field."""

    message: Message
    entries: list[memoryview]


_APART_FROM_BYTES = 1 << 16  # a smaller request is parsed whole: copying costs less than the scan
_WIRE_VARINT, _WIRE_LEN = 0, 2
_FIXED_WIDTH = {1: 8, 5: 4}  # wire types I64 and I32: their bytes


def split_field(data: bytes, field: int) -> tuple[bytes, list[memoryview]] | None:
    """The serialized message ``data`` with its top-level length-delimited ``field`` taken
    out: the other fields' bytes (in order) and views of that field's entries. None if the
    scan meets anything but well-formed fields of wire types 0, 1, 2 and 5 (protobuf, given
    the whole message, decides what such bytes are)."""
    view = memoryview(data)
    rest: list[memoryview] = []
    entries: list[memoryview] = []
    try:
        for number, wire, start, value_start, end in _top_fields(data):
            if number == field and wire == _WIRE_LEN:
                entries.append(view[value_start:end])
            else:
                rest.append(view[start:end])
    except ValueError:
        return None
    return b"".join(rest), entries


def _top_fields(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(number, wire type, start, start of the value, end) of each top-level field of
    ``data``; ValueError at the first field that is not well formed."""
    pos, size = 0, len(data)
    while pos < size:
        start = pos
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        value_start = pos
        if wire == _WIRE_VARINT:
            pos = _read_varint(data, pos)[1]
        elif wire == _WIRE_LEN:
            length, value_start = _read_varint(data, pos)
            pos = value_start + length
        elif wire in _FIXED_WIDTH:
            pos += _FIXED_WIDTH[wire]
        else:
            raise ValueError(f"wire type {wire}")
        if number == 0 or pos > size:
            raise ValueError(f"field {number} does not end in the message")
        yield number, wire, start, value_start, pos


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; ValueError when it runs past the
    end or past 10 bytes."""
    value = shift = 0
    for at in range(pos, min(len(data), pos + 10)):
        byte = data[at]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at + 1
        shift += 7
    raise ValueError("truncated or overlong varint")


def kept_apart(request: Any) -> tuple[Any, list[memoryview] | None]:
    """The message a method received and the entries kept apart from it: ``request`` and
    None for anything but a :class:`BytesApart`."""
    if isinstance(request, BytesApart):
        return request.message, request.entries
    return request, None


def request_parser(message: type[Message], report: EventReport,
                   clock: Callable[[], float] = time.monotonic, apart: int | None = None
                   ) -> Callable[[bytes], Message | BytesApart | MalformedRequest]:
    """A request deserializer for grpc: the ``message`` its bytes hold, or a
    :class:`MalformedRequest` (counted in ``report`` at ``clock()``) when they hold none.
    With ``apart`` (a field number), a request of 64 KiB or more with entries in that field
    is a :class:`BytesApart`."""
    message_type = message.DESCRIPTOR.full_name
    parse = message.FromString

    def parse_request(data: bytes) -> Message | BytesApart | MalformedRequest:
        try:
            if apart is not None and len(data) >= _APART_FROM_BYTES:
                split = split_field(data, apart)
                if split is not None and split[1]:
                    return BytesApart(parse(split[0]), split[1])
            return parse(data)
        except _PARSE_FAILURES as exc:
            return MalformedRequest(
                message_type, f"{len(data)} bytes that do not parse ({type(exc).__name__})",
                report.note(clock()), report.total)
    return parse_request


def add_service(server: grpc.aio.Server, servicer: Any, service: ServiceDescriptor,
                report: EventReport, apart: Mapping[str, str] | None = None) -> None:
    """Register every method of ``service`` on ``server``, answered by ``servicer``'s method
    of the same name, its requests parsed by :func:`request_parser` (counted in
    ``report``) and its answers written by :func:`response_serializer`. ``apart`` names, by
    method, the repeated ``bytes`` field of its request to keep apart (:class:`BytesApart`)."""
    handlers = {}
    for method in service.methods:
        make = _HANDLERS[method.client_streaming, method.server_streaming]
        field = (apart or {}).get(method.name)
        number = None if field is None else method.input_type.fields_by_name[field].number
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=request_parser(GetMessageClass(method.input_type), report,
                                                apart=number),
            response_serializer=response_serializer(GetMessageClass(method.output_type)))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
