"""The frontend channel (gateway <-> broker): REQUEST, REPLY and CONTROL.

A REQUEST carries its route in fixed frames (request id, service, endpoint,
time left and rows) so the broker routes it without unpacking the payload;
the broker answers every REQUEST and CONTROL with exactly one REPLY.
"""
from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zeroserve.wire.envelope import (
    PROTOCOL,
    Command,
    Frame,
    ProtocolError,
    Status,
    pack_map,
    raw,
    status_from_code,
    text,
    unpack_map,
)

_ROUTE = struct.Struct(">IIB")  # timeout_ms, rows, flags
_VERSION = struct.Struct(">I")  # after the service's name and a NUL: the version asked for
# REQUEST flags: the caller wants the stages of its request back in the REPLY (docs/protocol.md)
FLAG_STAGES = 0x01
MAX_STAGES = 64  # stages one REPLY carries at most (a deeper call tree is cut)
# the routing id a worker's dependency link gives itself: dep:<calling service>:<random>, so
# that the broker counts calls per (caller, callee); it is never trusted for anything else
DEPENDENCY_PREFIX = b"dep:"
_STATUS = struct.Struct(">H")
_REQUEST, _REPLY = Command.REQUEST.value, Command.REPLY.value  # (an enum's .value costs)


@dataclass(slots=True)
class Request:
    """A call from a gateway: route fields plus an opaque payload (meta + body frames).

    ``timeout_ms`` is the time left until the request's deadline when it was
    sent; each hop turns it into a deadline on its own clock, so hosts need no
    synchronised clocks. ``rows`` is the number of rows along the batch
    dimension and ``batch_key`` names what must match for requests to share
    a batch (dtypes and shapes past the batch dimension); both are empty for
    endpoints that do not batch. ``version`` names the version of the service to run (0: the
    latest one the broker serves). ``stages``: the caller wants the REPLY to say which
    services, workers, queue waits and execution times answered it (:data:`FLAG_STAGES`).
    """

    request_id: bytes
    service: str
    endpoint: str
    timeout_ms: int
    meta: Frame
    body: list = field(default_factory=list)
    rows: int = 1
    batch_key: bytes = b""
    version: int = 0
    stages: bool = False

    def to_frames(self) -> list:
        return [
            PROTOCOL,
            _REQUEST,
            self.request_id,
            self.service.encode() + b"\0" + _VERSION.pack(self.version) if self.version
            else self.service.encode(),
            self.endpoint.encode(),
            _ROUTE.pack(self.timeout_ms, self.rows, FLAG_STAGES if self.stages else 0)
            + self.batch_key,
            self.meta,
            *self.body,
        ]


def parse_request(rest: Sequence[Frame]) -> Request:
    """Parse the frames after the command of a REQUEST."""
    if len(rest) < 5:
        raise ProtocolError(
            f"REQUEST has {len(rest)} frames after the command, at least 5 expected")
    request_id = raw(rest[0])
    if not request_id:
        raise ProtocolError("REQUEST has an empty request id")
    route = raw(rest[3])
    if len(route) < _ROUTE.size:
        raise ProtocolError("REQUEST route frame is too short")
    timeout_ms, rows, flags = _ROUTE.unpack_from(route)
    name, versioned, version_bytes = raw(rest[1]).partition(b"\0")
    version = 0
    if versioned:
        if len(version_bytes) != _VERSION.size:
            raise ProtocolError("REQUEST service frame: a NUL must be followed by a 4-byte "
                                "version")
        version = _VERSION.unpack(version_bytes)[0]
    return Request(
        request_id=request_id,
        service=text(name, "service"),
        endpoint=text(rest[2], "endpoint"),
        timeout_ms=timeout_ms,
        meta=rest[4],
        body=list(rest[5:]),
        rows=rows,
        batch_key=route[_ROUTE.size:],
        version=version,
        stages=bool(flags & FLAG_STAGES),
    )


@dataclass(slots=True)
class Reply:
    """The answer to a REQUEST or CONTROL, routed back to the gateway that sent it.
    ``stages`` (a REQUEST with :data:`FLAG_STAGES` only): one map per stage that answered it,
    the called endpoint's first, then the ones it called (see docs/protocol.md)."""

    request_id: bytes
    status: Status
    meta: Frame
    body: list = field(default_factory=list)
    stages: list | None = None

    def to_frames(self) -> list:
        status = _STATUS.pack(self.status)
        if self.stages is not None:
            status += pack_map(self.stages)
        return [PROTOCOL, _REPLY, self.request_id, status, self.meta, *self.body]


def parse_reply(rest: Sequence[Frame]) -> Reply:
    """Parse the frames after the command of a REPLY."""
    if len(rest) < 3:
        raise ProtocolError(f"REPLY has {len(rest)} frames after the command, at least 3 expected")
    status_raw = raw(rest[1])
    if len(status_raw) < _STATUS.size:
        raise ProtocolError("REPLY status frame must be at least 2 bytes")
    status = status_from_code(_STATUS.unpack_from(status_raw)[0])
    if status is None:
        raise ProtocolError(f"REPLY has unknown status {status_raw[:2]!r}")
    stages = None
    if len(status_raw) > _STATUS.size:
        stages = parse_stages(unpack_map(status_raw[_STATUS.size:], "REPLY stages"),
                              "REPLY stages")
    return Reply(raw(rest[0]), status, rest[2], list(rest[3:]), stages)


def parse_stages(value: Any, what: str) -> list:
    """``value`` checked to be a list of at most :data:`MAX_STAGES` maps with text keys."""
    if not isinstance(value, list) or len(value) > MAX_STAGES or not all(
            isinstance(stage, dict) and all(isinstance(k, str) for k in stage)
            for stage in value):
        raise ProtocolError(f"{what} must be a list of at most {MAX_STAGES} maps")
    return value


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
    # durable async jobs (docs/jobs.md); errors are {"error", "code": status}; with API keys
    # on, a gateway adds {owner, admin?} to every job call's args (the key's name and role)
    JOB_SUBMIT = "job.submit"  # {service, task, inputs, idempotency_key?} -> {job, created}
    JOB_GET = "job.get"        # {id} -> {job}
    JOB_RESULT = "job.result"  # {id} -> {job, result}
    JOB_CANCEL = "job.cancel"  # {id} -> {job}
    JOB_RETRY = "job.retry"    # {id} -> {job}
    JOB_LIST = "job.list"      # {service?, state?, after?, limit?} -> {jobs, next}
    # the traffic split of a service's version-less calls (docs/protocol.md); {} clears it
    SET_TRAFFIC = "set_traffic"  # {service, weights: {version: percent}} -> {service, traffic}


@dataclass(slots=True)
class Control:
    """A control call; answered with a REPLY whose meta is a msgpack map.

    ``cluster`` names the caller's cluster (``cluster.name``); it travels as the ``cluster``
    key of the args map. A broker of another cluster answers an error REPLY; a call that
    names none ("": operator tools such as ``zeroserve status``) is answered."""

    request_id: bytes
    op: ControlOp
    args: dict
    cluster: str = ""

    def to_frames(self) -> list:
        args = {**self.args, "cluster": self.cluster} if self.cluster else self.args
        return [PROTOCOL, Command.CONTROL.value, self.request_id, self.op.value.encode(),
                pack_map(args)]


def parse_control(rest: Sequence[Frame]) -> Control:
    """Parse the frames after the command of a CONTROL."""
    if len(rest) != 3:
        raise ProtocolError(f"CONTROL has {len(rest)} frames after the command, 3 expected")
    try:
        op = ControlOp(text(rest[1], "control op"))
    except ValueError:
        raise ProtocolError(f"unknown control op {raw(rest[1])[:32]!r}") from None
    args = unpack_map(rest[2], "control args")
    if not isinstance(args, dict):
        raise ProtocolError("control args must be a map")
    cluster = args.pop("cluster", "")
    if not isinstance(cluster, str):
        raise ProtocolError("control cluster must be a string")
    return Control(raw(rest[0]), op, args, cluster)




def endpoint_stats_key(service: str, endpoint: str, version: int = 1) -> str:
    """The key of an endpoint's figures in the ``stats`` answer: ``service.endpoint``, and
    ``service.endpoint@version`` for a version other than 1."""
    return f"{service}.{endpoint}" if version == 1 else f"{service}.{endpoint}@{version}"
