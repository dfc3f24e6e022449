"""The wire protocol shared by every zeroserve daemon (version ZS1).

Every message is a ZeroMQ multipart message whose first frame names the
protocol and version and whose second frame is one command byte. Routing data
sits in fixed frames so that the broker routes a request without unpacking its
payload; the payload is one msgpack metadata frame plus raw body frames (see
``zeroserve.codec``). ``docs/protocol.md`` documents the layout frame by frame.

This module is the only place that builds or parses these messages. Parsers
take the frames *after* any ROUTER identity envelope and raise
:class:`ProtocolError` with a reason on anything malformed; they never
decode payloads.
"""
from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    # backend: worker <-> broker
    READY = b"\x10"
    HEARTBEAT = b"\x11"
    BATCH = b"\x12"
    RESULT = b"\x13"
    DISCONNECT = b"\x14"


_COMMANDS = {c.value: c for c in Command}


class Status(enum.IntEnum):
    """Outcome of a request, carried in REPLY and RESULT; maps 1:1 to an HTTP status."""

    OK = 200
    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    CONFLICT = 409  # a job operation that its state does not allow
    PAYLOAD_TOO_LARGE = 413
    USER_ERROR = 500
    INTERNAL = 501
    NO_WORKER = 503
    QUEUE_FULL = 529
    DEADLINE_EXCEEDED = 504

    @property
    def http_status(self) -> int:
        """The HTTP status that a gateway answers with."""
        return _HTTP_STATUS.get(self, int(self))


_HTTP_STATUS = {Status.INTERNAL: 500, Status.QUEUE_FULL: 503}
_STATUSES = {int(s): s for s in Status}


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the reason says what is wrong."""


_ROUTE = struct.Struct(">II")  # timeout_ms, rows
_STATUS = struct.Struct(">H")
_BATCH_ID = struct.Struct(">Q")


def _raw(frame: Frame) -> bytes:
    """The bytes of a routing frame (a zmq.Frame received with copy=False, or bytes)."""
    data: Any = getattr(frame, "bytes", frame)
    return data if isinstance(data, bytes) else bytes(data)


def _text(frame: Frame, what: str) -> str:
    try:
        text = _raw(frame).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not UTF-8") from None
    if not text:
        raise ProtocolError(f"{what} is empty")
    return text


def unpack_map(frame: Frame, what: str) -> Any:
    """Decode a msgpack control frame (never a payload: those belong to the codec)."""
    try:
        return msgpack.unpackb(_raw(frame), raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise ProtocolError(f"{what} is not valid msgpack: {exc}") from None


def pack_map(value: Any) -> bytes:
    """Encode a msgpack control frame."""
    return msgpack.packb(value, use_bin_type=True)


def split_command(frames: Sequence[Frame]) -> tuple[Command, Sequence[Frame]]:
    """Check the protocol frame and return the command and the frames after it."""
    if len(frames) < 2:
        raise ProtocolError(f"message has {len(frames)} frame(s), at least 2 expected")
    if len(frames) > MAX_FRAMES:
        raise ProtocolError(f"message has {len(frames)} frames, at most {MAX_FRAMES} allowed")
    if _raw(frames[0]) != PROTOCOL:
        raise ProtocolError(f"unknown protocol {_raw(frames[0])[:16]!r}, expected {PROTOCOL!r}")
    command = _COMMANDS.get(_raw(frames[1]))
    if command is None:
        raise ProtocolError(f"unknown command {_raw(frames[1])[:8]!r}")
    return command, frames[2:]


# ---------------------------------------------------------------- frontend


@dataclass(slots=True)
class Request:
    """A call from a gateway: route fields plus an opaque payload (meta + body frames).

    ``timeout_ms`` is the time left until the request's deadline when it was
    sent; each hop turns it into a deadline on its own clock, so hosts need no
    synchronised clocks. ``rows`` is the number of rows along the batch
    dimension and ``batch_key`` names what must match for requests to share
    a batch (dtypes and shapes past the batch dimension); both are empty for
    endpoints that do not batch.
    """

    request_id: bytes
    service: str
    endpoint: str
    timeout_ms: int
    meta: Frame
    body: list = field(default_factory=list)
    rows: int = 1
    batch_key: bytes = b""

    def to_frames(self) -> list:
        return [
            PROTOCOL,
            Command.REQUEST.value,
            self.request_id,
            self.service.encode(),
            self.endpoint.encode(),
            _ROUTE.pack(self.timeout_ms, self.rows) + self.batch_key,
            self.meta,
            *self.body,
        ]


def parse_request(rest: Sequence[Frame]) -> Request:
    """Parse the frames after the command of a REQUEST."""
    if len(rest) < 5:
        raise ProtocolError(
            f"REQUEST has {len(rest)} frames after the command, at least 5 expected")
    request_id = _raw(rest[0])
    if not request_id:
        raise ProtocolError("REQUEST has an empty request id")
    route = _raw(rest[3])
    if len(route) < _ROUTE.size:
        raise ProtocolError("REQUEST route frame is too short")
    timeout_ms, rows = _ROUTE.unpack_from(route)
    return Request(
        request_id=request_id,
        service=_text(rest[1], "service"),
        endpoint=_text(rest[2], "endpoint"),
        timeout_ms=timeout_ms,
        meta=rest[4],
        body=list(rest[5:]),
        rows=rows,
        batch_key=route[_ROUTE.size:],
    )


@dataclass(slots=True)
class Reply:
    """The answer to a REQUEST or CONTROL, routed back to the gateway that sent it."""

    request_id: bytes
    status: Status
    meta: Frame
    body: list = field(default_factory=list)

    def to_frames(self) -> list:
        return [PROTOCOL, Command.REPLY.value, self.request_id, _STATUS.pack(self.status),
                self.meta, *self.body]


def parse_reply(rest: Sequence[Frame]) -> Reply:
    """Parse the frames after the command of a REPLY."""
    if len(rest) < 3:
        raise ProtocolError(f"REPLY has {len(rest)} frames after the command, at least 3 expected")
    status_raw = _raw(rest[1])
    if len(status_raw) != _STATUS.size:
        raise ProtocolError("REPLY status frame must be 2 bytes")
    status = _STATUSES.get(_STATUS.unpack(status_raw)[0])
    if status is None:
        raise ProtocolError(f"REPLY has unknown status {status_raw!r}")
    return Reply(_raw(rest[0]), status, rest[2], list(rest[3:]))


def error_reply(request_id: bytes, status: Status, message: str, **extra: Any) -> Reply:
    """A REPLY carrying an error: its meta is ``{"error": message, ...extra}``."""
    return Reply(request_id, status, pack_map({"error": message, **extra}))


def error_details(reply: Reply) -> dict:
    """The meta map of an error REPLY: ``{"error": message, ...}`` (a generic message if absent)."""
    try:
        meta = unpack_map(reply.meta, "reply meta")
    except ProtocolError:
        meta = None
    if not isinstance(meta, dict):
        meta = {}
    meta.setdefault("error", f"status {int(reply.status)}")
    return meta


def error_message(reply: Reply) -> str:
    """The message of an error REPLY."""
    return str(error_details(reply)["error"])


class ControlOp(str, enum.Enum):  # noqa: UP042 (StrEnum needs 3.11)
    """Control calls a gateway (or an operator tool) makes on the broker's frontend."""

    PING = "ping"          # -> {"broker_id", "uptime_s"}
    MODELS = "models"      # -> {"services": {name: service description}, "workers": {name: n}}
    STATS = "stats"        # -> broker statistics (workers, queues, batching)
    # durable async jobs (docs/jobs.md); errors are {"error", "code": status}
    JOB_SUBMIT = "job.submit"  # {service, task, inputs, idempotency_key?} -> {job, created}
    JOB_GET = "job.get"        # {id} -> {job}
    JOB_RESULT = "job.result"  # {id} -> {job, result}
    JOB_CANCEL = "job.cancel"  # {id} -> {job}
    JOB_RETRY = "job.retry"    # {id} -> {job}
    JOB_LIST = "job.list"      # {service?, state?, after?, limit?} -> {jobs, next}


@dataclass(slots=True)
class Control:
    """A control call; answered with a REPLY whose meta is a msgpack map."""

    request_id: bytes
    op: ControlOp
    args: dict

    def to_frames(self) -> list:
        return [PROTOCOL, Command.CONTROL.value, self.request_id, self.op.value.encode(),
                pack_map(self.args)]


def parse_control(rest: Sequence[Frame]) -> Control:
    """Parse the frames after the command of a CONTROL."""
    if len(rest) != 3:
        raise ProtocolError(f"CONTROL has {len(rest)} frames after the command, 3 expected")
    try:
        op = ControlOp(_text(rest[1], "control op"))
    except ValueError:
        raise ProtocolError(f"unknown control op {_raw(rest[1])[:32]!r}") from None
    args = unpack_map(rest[2], "control args")
    if not isinstance(args, dict):
        raise ProtocolError("control args must be a map")
    return Control(_raw(rest[0]), op, args)


# ---------------------------------------------------------------- backend


@dataclass(slots=True)
class Ready:
    """A worker's registration: the service it loaded, its endpoints and its slots.

    ``endpoints`` maps an endpoint name to its description (schema and
    batching settings, see ``zeroserve.service.EndpointSpec.describe``).
    ``jobs`` describes the worker's job lane (empty without one; see
    ``zeroserve.job_protocol.JobLaneInfo``).
    """

    worker_id: str
    service: str
    endpoints: dict
    slots: int
    info: dict = field(default_factory=dict)
    jobs: dict = field(default_factory=dict)

    def to_frames(self) -> list:
        return [PROTOCOL, Command.READY.value, pack_map({
            "worker_id": self.worker_id, "service": self.service, "endpoints": self.endpoints,
            "slots": self.slots, "info": self.info, "jobs": self.jobs})]


def parse_ready(rest: Sequence[Frame]) -> Ready:
    """Parse the frames after the command of a READY."""
    if len(rest) != 1:
        raise ProtocolError(f"READY has {len(rest)} frames after the command, 1 expected")
    body = unpack_map(rest[0], "READY body")
    if not isinstance(body, dict):
        raise ProtocolError("READY body must be a map")
    try:
        ready = Ready(str(body["worker_id"]), str(body["service"]), dict(body["endpoints"]),
                      int(body["slots"]), dict(body.get("info") or {}),
                      dict(body.get("jobs") or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"READY body is missing or has a bad field: {exc}") from None
    if not ready.service or not (ready.endpoints or ready.jobs.get("tasks")):
        raise ProtocolError("READY names no service or no endpoint")
    if not 1 <= ready.slots <= 4096:
        raise ProtocolError(f"READY slots {ready.slots} out of range 1..4096")
    for name, desc in ready.endpoints.items():
        if not isinstance(name, str) or not isinstance(desc, dict):
            raise ProtocolError("READY endpoints must map names to descriptions")
    return ready


def heartbeat() -> list:
    return [PROTOCOL, Command.HEARTBEAT.value]


def disconnect() -> list:
    return [PROTOCOL, Command.DISCONNECT.value]


@dataclass(slots=True)
class BatchItem:
    """One request inside a BATCH: its id, time left, and its meta + body frames."""

    request_id: bytes
    timeout_ms: int
    frames: list  # [meta, *body]


@dataclass(slots=True)
class Batch:
    """Work for a worker: one or more requests to one endpoint, run as one call."""

    batch_id: int
    endpoint: str
    items: list  # list[BatchItem]

    def to_frames(self) -> list:
        header = pack_map([[it.request_id, it.timeout_ms, len(it.frames)] for it in self.items])
        frames = [PROTOCOL, Command.BATCH.value, _BATCH_ID.pack(self.batch_id),
                  self.endpoint.encode(), header]
        for it in self.items:
            frames.extend(it.frames)
        return frames


def _split_items(header: Any, payload: Sequence[Frame], what: str) -> list[tuple[list, list]]:
    """Pair each header entry ``[..., n_frames]`` with its frames of ``payload``."""
    if not isinstance(header, list) or not header:
        raise ProtocolError(f"{what} header must be a non-empty list")
    out: list[tuple[list, list]] = []
    pos = 0
    for entry in header:
        if not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[2], int) \
                or entry[2] < 1:
            raise ProtocolError(f"{what} header entry is malformed")
        out.append((entry, list(payload[pos:pos + entry[2]])))
        pos += entry[2]
    if pos != len(payload):
        raise ProtocolError(f"{what} header counts {pos} frames, message has {len(payload)}")
    return out


def parse_batch(rest: Sequence[Frame]) -> Batch:
    """Parse the frames after the command of a BATCH."""
    if len(rest) < 4:
        raise ProtocolError("BATCH is too short")
    raw_id = _raw(rest[0])
    if len(raw_id) != _BATCH_ID.size:
        raise ProtocolError("BATCH id must be 8 bytes")
    header = unpack_map(rest[2], "BATCH header")
    items = []
    for entry, frames in _split_items(header, rest[3:], "BATCH"):
        if not isinstance(entry[0], bytes) or not isinstance(entry[1], int):
            raise ProtocolError("BATCH header entry has a bad request id or timeout")
        items.append(BatchItem(entry[0], entry[1], frames))
    return Batch(_BATCH_ID.unpack(raw_id)[0], _text(rest[1], "endpoint"), items)


@dataclass(slots=True)
class ResultItem:
    """The outcome of one request of a batch: status and its meta + body frames."""

    request_id: bytes
    status: Status
    frames: list  # [meta, *body]


@dataclass(slots=True)
class Result:
    """A worker's answer to a BATCH; ``exec_s`` is how long the user function ran."""

    batch_id: int
    exec_s: float
    items: list  # list[ResultItem]

    def to_frames(self) -> list:
        header = pack_map({"exec_s": self.exec_s, "items": [
            [it.request_id, int(it.status), len(it.frames)] for it in self.items]})
        frames = [PROTOCOL, Command.RESULT.value, _BATCH_ID.pack(self.batch_id), header]
        for it in self.items:
            frames.extend(it.frames)
        return frames


def parse_result(rest: Sequence[Frame]) -> Result:
    """Parse the frames after the command of a RESULT."""
    if len(rest) < 3:
        raise ProtocolError("RESULT is too short")
    raw_id = _raw(rest[0])
    if len(raw_id) != _BATCH_ID.size:
        raise ProtocolError("RESULT batch id must be 8 bytes")
    header = unpack_map(rest[1], "RESULT header")
    if not isinstance(header, dict) or not isinstance(header.get("exec_s"), (int, float)):
        raise ProtocolError("RESULT header must be a map with exec_s")
    items = []
    for entry, frames in _split_items(header.get("items"), rest[2:], "RESULT"):
        status = _STATUSES.get(entry[1])
        if status is None:
            raise ProtocolError(f"RESULT has unknown status {entry[1]!r}")
        if not isinstance(entry[0], bytes):
            raise ProtocolError("RESULT item has a bad request id")
        items.append(ResultItem(entry[0], status, frames))
    return Result(_BATCH_ID.unpack(raw_id)[0], float(header["exec_s"]), items)
