"""The REST framings of a stream (``POST /{service}/{endpoint}`` of an endpoint that streams):
the bytes of each chunk, error and end, in the framing the ``Accept`` header asks (pure).

- :attr:`Framing.SSE` (the default, ``text/event-stream``): ``data: <json>`` per chunk,
  ``event: error`` with ``{"error", "status"}``, and ``event: done`` with ``{"chunks": n}``.
- :attr:`Framing.NDJSON` (``application/x-ndjson``): one JSON object a line, ``{"data": v}``,
  ``{"error", "status"}``, ``{"done": true, "chunks": n}``.
- :attr:`Framing.MSGPACK` (``application/vnd.zeroserve.stream+msgpack``, what the SDK asks):
  the same three maps in the codec's msgpack with every array inline (dtypes and shapes
  kept), each after its length as 4 bytes big-endian.

JSON carries numpy arrays as nested lists, as a non-streaming JSON answer does; a chunk JSON
cannot carry (NaN, or a type it has no form for) is a :class:`~gateway.errors.RequestFailed`.
``status`` is the HTTP status (:func:`gateway.errors.http_status`) the failure would have had.
"""
from __future__ import annotations

import enum
import struct
from typing import Any

from gateway.errors import RequestFailed
from gateway.json_body import JsonBodyError, dump_json
from zeroserve.wire import codec
from zeroserve.wire.envelope import Status

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_LENGTH = struct.Struct(">I")
_INLINE = 1 << 62  # the codec's frame threshold above which nothing goes out of line


class Framing(enum.Enum):
    """How a stream's events are written; the value is the answer's ``Content-Type``."""

    SSE = "text/event-stream"
    NDJSON = "application/x-ndjson"
    MSGPACK = "application/vnd.zeroserve.stream+msgpack"


_SINGLE_ANSWER = frozenset({"application/json", "application/msgpack", "application/x-msgpack"})


def asks_single_answer(accept: str) -> bool:
    """Whether an ``Accept`` header names only single-answer types (JSON, msgpack): such a
    client cannot read a stream, so a streaming endpoint refuses it before anything runs."""
    types = {part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()}
    return bool(types) and types <= _SINGLE_ANSWER


def framing_of(accept: str) -> Framing:
    """The framing an ``Accept`` header asks: msgpack or NDJSON when it names them (msgpack
    first), SSE otherwise (``text/event-stream``, ``*/*``, nothing)."""
    if Framing.MSGPACK.value in accept:
        return Framing.MSGPACK
    if Framing.NDJSON.value in accept and Framing.SSE.value not in accept:
        return Framing.NDJSON
    return Framing.SSE


def _json(value: Any, what: str) -> bytes:
    try:
        return dump_json(value, what)
    except JsonBodyError as exc:
        raise RequestFailed(Status.BAD_REQUEST, str(exc)) from None
    except TypeError as exc:
        raise RequestFailed(Status.USER_ERROR, f"{what} cannot be sent as JSON: {exc}") from None


def _msgpack(event: dict[str, Any]) -> bytes:
    try:
        meta, _ = codec.encode(event, threshold=_INLINE)
    except codec.CodecError as exc:
        raise RequestFailed(Status.USER_ERROR, f"a stream chunk cannot be sent: {exc}") from None
    return _LENGTH.pack(len(meta)) + meta


def chunk_frame(framing: Framing, value: Any, what: str = "a stream chunk") -> bytes:
    """One chunk's bytes; ``what`` names it in the error when JSON cannot carry it."""
    if framing is Framing.SSE:
        return b"data: " + _json(value, what) + b"\n\n"
    if framing is Framing.NDJSON:
        return b'{"data": ' + _json(value, what) + b"}\n"
    return _msgpack({"data": value})


def error_frame(framing: Framing, message: str, status: int) -> bytes:
    """The bytes of the error that ends a stream (``status``: its HTTP status)."""
    event = {"error": message, "status": status}
    if framing is Framing.SSE:
        return b"event: error\ndata: " + dump_json(event) + b"\n\n"
    if framing is Framing.NDJSON:
        return dump_json(event) + b"\n"
    return _msgpack(event)


def done_frame(framing: Framing, chunks: int) -> bytes:
    """The bytes of a stream's end, after ``chunks`` chunks."""
    if framing is Framing.SSE:
        return b'event: done\ndata: {"chunks": %d}\n\n' % chunks
    if framing is Framing.NDJSON:
        return b'{"done": true, "chunks": %d}\n' % chunks
    return _msgpack({"done": True, "chunks": chunks})
