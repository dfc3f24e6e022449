"""The envelope of every zeroserve message (protocol ZS1): frames, commands, statuses.

Every message is a ZeroMQ multipart message whose first frame names the
protocol and version and whose second frame is one command byte. Routing data
sits in fixed frames so that the broker routes a request without unpacking its
payload; the payload is one msgpack metadata frame plus raw body frames (see
``zeroserve.wire.codec``). ``docs/protocol.md`` documents the layout frame by frame.

This module holds what every message shares (the protocol frame, the command
byte, the status, msgpack control frames); ``frontend``, ``backend`` and
``jobs`` build and parse the messages of each channel. Parsers take the frames
*after* any ROUTER identity envelope and raise :class:`ProtocolError` with a
reason on anything malformed; they never decode payloads.
"""
from __future__ import annotations

import enum
import threading
from collections.abc import Sequence
from typing import Any

import msgpack

PROTOCOL = b"ZS1"
MAX_FRAMES = 16384  # frames in one message: a BATCH of a few hundred requests fits easily

Frame = Any  # bytes, memoryview, or a zmq.Frame received with copy=False


class Command(bytes, enum.Enum):
    """The command byte of a message (frame 1)."""

    # frontend: gateway <-> broker
    REQUEST = b"\x01"
    REPLY = b"\x02"
    CONTROL = b"\x03"
    CHUNK = b"\x04"       # broker -> gateway: one chunk of a stream
    CREDIT = b"\x05"      # gateway -> broker: the reader took chunks
    CANCEL = b"\x06"      # gateway -> broker: the caller went away
    # backend: worker <-> broker
    READY = b"\x10"
    HEARTBEAT = b"\x11"
    BATCH = b"\x12"
    RESULT = b"\x13"
    DISCONNECT = b"\x14"
    STREAM_CHUNK = b"\x15"   # worker -> broker
    STREAM_CREDIT = b"\x16"  # broker -> worker
    STREAM_CANCEL = b"\x17"  # broker -> worker
    WAITING = b"\x18"        # worker -> broker: a batch waits on dependency calls, or not


_COMMANDS = {c.value: c for c in Command}


class Status(enum.IntEnum):
    """Outcome of a request, carried in REPLY and RESULT (and as ``code`` in a failed job
    call's answer); the values follow HTTP's where one fits. UNAUTHORIZED and FORBIDDEN
    never cross the wire: a gateway answers them itself (API keys). What each becomes in
    HTTP and gRPC is the gateway's business (``gateway/errors.py``)."""

    OK = 200
    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    CONFLICT = 409  # a job operation that its state does not allow
    CANCELLED = 499  # the caller went away (a cancelled stream's end; never sent to a caller)
    PAYLOAD_TOO_LARGE = 413
    USER_ERROR = 500
    INTERNAL = 501
    NO_WORKER = 503
    QUEUE_FULL = 529
    DEADLINE_EXCEEDED = 504


_STATUSES = {int(s): s for s in Status}


def status_from_code(code: object) -> Status | None:
    """The :class:`Status` a wire code stands for, or None for a code the protocol lacks."""
    return _STATUSES.get(code)  # type: ignore[call-overload]


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the reason says what is wrong."""




def raw(frame: Frame) -> bytes:
    """The bytes of a routing frame (a zmq.Frame received with copy=False, or bytes)."""
    if frame.__class__ is bytes:  # how daemons receive routing frames: the common case first
        return frame  # type: ignore[no-any-return]
    data: Any = getattr(frame, "bytes", frame)
    return data if isinstance(data, bytes) else bytes(data)


def text(frame: Frame, what: str) -> str:
    try:
        text = (frame if frame.__class__ is bytes else raw(frame)).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not UTF-8") from None
    if not text:
        raise ProtocolError(f"{what} is empty")
    return text


def unpack_map(frame: Frame, what: str) -> Any:
    """Decode a msgpack control frame (never a payload: those belong to the codec)."""
    try:
        return msgpack.unpackb(raw(frame), raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise ProtocolError(f"{what} is not valid msgpack: {exc}") from None


_per_thread = threading.local()  # a Packer each: packing is 3 us with packb, 1 us with a Packer
# a Packer keeps the buffer it grew to: one that packed more than this is let go, so that a
# daemon that once packed a large message (a job's result, say) does not keep its size
KEEP_PACKER_BELOW = 1 << 20


def pack_map(value: Any) -> bytes:
    """Encode a msgpack control frame."""
    try:
        packer = _per_thread.packer
    except AttributeError:
        packer = _per_thread.packer = msgpack.Packer(use_bin_type=True)
    try:
        packed: bytes = packer.pack(value)
    except BaseException:
        del _per_thread.packer
        raise
    if len(packed) >= KEEP_PACKER_BELOW:
        del _per_thread.packer
    return packed


def split_command(frames: Sequence[Frame]) -> tuple[Command, Sequence[Frame]]:
    """Check the protocol frame and return the command and the frames after it."""
    if len(frames) < 2:
        raise ProtocolError(f"message has {len(frames)} frame(s), at least 2 expected")
    if len(frames) > MAX_FRAMES:
        raise ProtocolError(f"message has {len(frames)} frames, at most {MAX_FRAMES} allowed")
    if frames[0] != PROTOCOL and raw(frames[0]) != PROTOCOL:  # bytes, else a zmq.Frame
        raise ProtocolError(f"unknown protocol {raw(frames[0])[:16]!r}, expected {PROTOCOL!r}")
    command = _COMMANDS.get(raw(frames[1]))
    if command is None:
        raise ProtocolError(f"unknown command {raw(frames[1])[:8]!r}")
    return command, frames[2:]
