"""Stream messages (generator endpoints): CHUNK, CREDIT and CANCEL, on both channels.

A stream starts as an ordinary REQUEST to an endpoint that ``streams``, and the broker
dispatches it as a BATCH of that one request. The worker answers with chunks, numbered 0,
1, ..., sent in CHUNK messages naming the batch (one message carries the chunks the
generator produced in one go), and ends it with the batch's
RESULT (status OK and meta ``{"chunks": n}``, or an error). The broker forwards each chunk
to the gateway as a CHUNK naming the request, and the RESULT as the request's REPLY, without
decoding their payloads.

Flow control: a worker sends at most ``stream.window_chunks`` chunks and
``stream.window_bytes`` bytes that the reader has not yet taken; the gateway sends CREDIT
for what its client has read, and the broker forwards it to the worker. CANCEL (the caller
went away) makes the worker close the generator. ``docs/protocol.md`` lists the frames.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from zeroserve.wire.envelope import PROTOCOL, Command, Frame, ProtocolError, raw, split_command
from zeroserve.wire.frontend import Reply, parse_reply

_SEQ = struct.Struct(">I")
_FRAMES = struct.Struct(">H")  # frames of one chunk, in a CHUNK's counts frame
_CREDIT = struct.Struct(">IQ")  # chunks, bytes
_BATCH_ID = struct.Struct(">Q")


def frames_size(frames: Sequence[Frame]) -> int:
    """The bytes of a chunk's frames, as flow control counts them."""
    return sum(f.nbytes if isinstance(f, memoryview) else len(f) for f in frames)


def batch_key(batch_id: int) -> bytes:
    """The key that the backend's stream messages carry for ``batch_id``."""
    return _BATCH_ID.pack(batch_id)


def batch_id_of(key: bytes) -> int:
    """The batch id a backend stream message names; ProtocolError if the key is not one."""
    if len(key) != _BATCH_ID.size:
        raise ProtocolError("a stream message's batch id must be 8 bytes")
    return int(_BATCH_ID.unpack(key)[0])


def _key(frame: Frame, command: str) -> bytes:
    key = raw(frame)
    if not key:
        raise ProtocolError(f"{command} has an empty stream key")
    return key


@dataclass(slots=True)
class Chunk:
    """One chunk of a stream: its number and its value's meta and body frames.
    ``more_queued`` is the gateway's note that another chunk had already arrived when this
    one was handed out (a front end may write both before it flushes); never on the wire."""

    seq: int
    frames: list  # [meta, *body]
    more_queued: bool = False

    @property
    def nbytes(self) -> int:
        return frames_size(self.frames)


@dataclass(slots=True)
class Chunks:
    """A CHUNK message: consecutive chunks of stream ``key`` (the request id on the
    frontend, the batch id of :func:`batch_key` on the backend), the first numbered
    ``first``. A worker sends together the chunks its generator produced in one go."""

    key: bytes
    first: int
    bodies: list  # one [meta, *body] per chunk

    def to_frames(self, command: Command = Command.CHUNK) -> list:
        frames = [PROTOCOL, command.value, self.key, _SEQ.pack(self.first),
                  b"".join(_FRAMES.pack(len(body)) for body in self.bodies)]
        for body in self.bodies:
            frames.extend(body)
        return frames

    def chunks(self) -> list[Chunk]:
        return [Chunk(self.first + i, body) for i, body in enumerate(self.bodies)]


def parse_chunks(rest: Sequence[Frame]) -> Chunks:
    """Parse the frames after the command of a CHUNK (either channel)."""
    if len(rest) < 4:
        raise ProtocolError(f"CHUNK has {len(rest)} frames after the command, at least 4 expected")
    first, sizes = raw(rest[1]), raw(rest[2])
    if len(first) != _SEQ.size:
        raise ProtocolError("CHUNK number must be 4 bytes")
    if not sizes or len(sizes) % _FRAMES.size:
        raise ProtocolError("CHUNK frame counts must be 2 bytes per chunk")
    bodies, pos = [], 3
    for (count,) in _FRAMES.iter_unpack(sizes):
        if count < 1:
            raise ProtocolError("a CHUNK's chunk has no frame")
        bodies.append(list(rest[pos:pos + count]))
        pos += count
    if pos != len(rest):
        raise ProtocolError(f"CHUNK frame counts add up to {pos - 3} frames, it has "
                            f"{len(rest) - 3}")
    return Chunks(_key(rest[0], "CHUNK"), _SEQ.unpack(first)[0], bodies)


def parse_answer(frames: Sequence[Frame]) -> Reply | Chunks:
    """What the broker sends a caller (a gateway, or a worker's dependency link): the REPLY
    of a request or a control call, or a CHUNK of a stream; ProtocolError for anything else."""
    command, rest = split_command(frames)
    if command is Command.CHUNK:
        return parse_chunks(rest)
    if command is not Command.REPLY:
        raise ProtocolError(f"unexpected {command.name} from the broker")
    return parse_reply(rest)


@dataclass(slots=True)
class Credit:
    """The reader of stream ``key`` took ``chunks`` more chunks, ``nbytes`` bytes of them."""

    key: bytes
    chunks: int
    nbytes: int

    def to_frames(self, command: Command = Command.CREDIT) -> list:
        return [PROTOCOL, command.value, self.key, _CREDIT.pack(self.chunks, self.nbytes)]


def parse_credit(rest: Sequence[Frame]) -> Credit:
    """Parse the frames after the command of a CREDIT (either channel)."""
    if len(rest) != 2:
        raise ProtocolError(f"CREDIT has {len(rest)} frames after the command, 2 expected")
    credit = raw(rest[1])
    if len(credit) != _CREDIT.size:
        raise ProtocolError(f"CREDIT counts must be {_CREDIT.size} bytes")
    chunks, nbytes = _CREDIT.unpack(credit)
    return Credit(_key(rest[0], "CREDIT"), chunks, nbytes)


@dataclass(slots=True)
class Cancel:
    """The caller of ``key`` went away. On the backend ``item`` names the request within
    the batch (the BATCH header's item id); on the frontend it is empty."""

    key: bytes
    item: bytes = b""

    def to_frames(self, command: Command = Command.CANCEL) -> list:
        frames = [PROTOCOL, command.value, self.key]
        return frames + [self.item] if command is Command.STREAM_CANCEL else frames


def parse_cancel(rest: Sequence[Frame], backend: bool = False) -> Cancel:
    """Parse the frames after the command of a CANCEL (``backend``: a STREAM_CANCEL)."""
    expected = 2 if backend else 1
    if len(rest) != expected:
        raise ProtocolError(
            f"CANCEL has {len(rest)} frames after the command, {expected} expected")
    return Cancel(_key(rest[0], "CANCEL"), raw(rest[1]) if backend else b"")
