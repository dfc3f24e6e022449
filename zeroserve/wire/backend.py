"""The backend channel (worker <-> broker): READY, HEARTBEAT, BATCH, RESULT, DISCONNECT,
WAITING (streams' messages are in ``zeroserve.wire.stream``)."""
from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zeroserve.wire.descriptions import EndpointDescription, endpoints_from_map
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
from zeroserve.wire.frontend import parse_stages

_BATCH_ID = struct.Struct(">Q")
_BATCH, _RESULT = Command.BATCH.value, Command.RESULT.value  # (an enum's .value costs)


@dataclass(slots=True)
class Ready:
    """A worker's registration: the service it loaded, its endpoints and its slots.

    ``endpoints`` maps an endpoint name to its description (schema and
    batching settings), sent as its map. ``jobs`` describes the worker's job
    lane (empty without one; see ``zeroserve.wire.jobs.JobLaneInfo``). ``cluster``
    names the worker's cluster (``cluster.name``); a broker of another cluster refuses the
    worker, and one that names none ("") is admitted. ``version``: the version of the service
    the worker serves (at least 1; workers of several versions of one service serve side by
    side, each version its own endpoints). ``holds``: the batches the worker still runs from
    a previous connection (it reconnected): they stay in flight, on this connection.
    """

    worker_id: str
    service: str
    endpoints: dict[str, EndpointDescription]
    slots: int
    info: dict = field(default_factory=dict)
    jobs: dict = field(default_factory=dict)
    cluster: str = ""
    version: int = 1
    holds: frozenset[int] = frozenset()

    def to_frames(self) -> list:
        return [PROTOCOL, Command.READY.value, pack_map({
            "worker_id": self.worker_id, "service": self.service, "version": self.version,
            "endpoints": {name: desc.to_map() for name, desc in self.endpoints.items()},
            "slots": self.slots, "info": self.info, "jobs": self.jobs,
            "cluster": self.cluster, **({"holds": sorted(self.holds)} if self.holds else {})})]


def parse_ready(rest: Sequence[Frame]) -> Ready:
    """Parse the frames after the command of a READY."""
    if len(rest) != 1:
        raise ProtocolError(f"READY has {len(rest)} frames after the command, 1 expected")
    body = unpack_map(rest[0], "READY body")
    if not isinstance(body, dict):
        raise ProtocolError("READY body must be a map")
    try:
        service = str(body["service"])
        version = body.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ProtocolError(f"READY version must be an integer of at least 1, not "
                                f"{version!r}")
        ready = Ready(str(body["worker_id"]), service,
                      endpoints_from_map(service, body["endpoints"], version) if service else {},
                      int(body["slots"]), dict(body.get("info") or {}),
                      dict(body.get("jobs") or {}), body.get("cluster") or "", version,
                      _holds(body.get("holds")))
    except (KeyError, TypeError, ValueError) as exc:  # ProtocolError, a ValueError, included
        raise ProtocolError(f"READY body is missing or has a bad field: {exc}") from None
    if not isinstance(ready.cluster, str):
        raise ProtocolError("READY cluster must be a string")
    if not ready.service or not (ready.endpoints or ready.jobs.get("tasks")):
        raise ProtocolError("READY names no service or no endpoint")
    if not 1 <= ready.slots <= 4096:
        raise ProtocolError(f"READY slots {ready.slots} out of range 1..4096")
    return ready


MAX_HELD = 65536  # batches a READY may say its worker still runs


def _holds(value: object) -> frozenset[int]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or len(value) > MAX_HELD or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 64 for v in value):
        raise ProtocolError(f"READY holds must be a list of at most {MAX_HELD} batch ids")
    return frozenset(value)


def heartbeat(metrics: dict | None = None) -> list:
    """A HEARTBEAT; a worker's may carry the values of its service's own metrics
    (``zeroserve.metrics``), as one map frame ``{"metrics": {name: family}}``."""
    frames = [PROTOCOL, Command.HEARTBEAT.value]
    return frames + [pack_map({"metrics": metrics})] if metrics is not None else frames


def parse_heartbeat(rest: Sequence[Frame]) -> dict | None:
    """The metrics map that the frames after the command of a HEARTBEAT carry (None: none).
    Only its shape is checked here; each family is checked where it is used."""
    if not rest:
        return None
    body = unpack_map(rest[0], "HEARTBEAT body")
    if len(rest) != 1 or not isinstance(body, dict) or not isinstance(body.get("metrics"), dict):
        raise ProtocolError("HEARTBEAT body must be one map with a metrics map")
    return body["metrics"]


def disconnect(refused: str = "") -> list:
    """A DISCONNECT; ``refused`` (a broker's answer to a READY it does not admit, such as one
    of another cluster) says why, in a map frame ``{"refused": message}``."""
    frames = [PROTOCOL, Command.DISCONNECT.value]
    return frames + [pack_map({"refused": refused})] if refused else frames


def waiting(batch_id: int, is_waiting: bool) -> list:
    """A WAITING: batch ``batch_id``'s requests wait on dependency calls (its slot may take
    other work meanwhile), or, with ``is_waiting`` false, run again."""
    return [PROTOCOL, Command.WAITING.value, _BATCH_ID.pack(batch_id),
            b"\x01" if is_waiting else b"\x00"]


def parse_waiting(rest: Sequence[Frame]) -> tuple[int, bool]:
    """The batch id and the flag of the frames after the command of a WAITING."""
    if len(rest) != 2 or len(raw(rest[0])) != _BATCH_ID.size or raw(rest[1]) not in (
            b"\x00", b"\x01"):
        raise ProtocolError("WAITING must be a batch id and a 1-byte flag")
    return _BATCH_ID.unpack(raw(rest[0]))[0], raw(rest[1]) == b"\x01"


def parse_disconnect(rest: Sequence[Frame]) -> str:
    """The refusal that the frames after the command of a DISCONNECT carry ("" for none)."""
    if not rest:
        return ""
    body = unpack_map(rest[0], "DISCONNECT body")
    if len(rest) != 1 or not isinstance(body, dict) or not isinstance(body.get("refused"), str):
        raise ProtocolError("DISCONNECT body must be one map with a refused message")
    return body["refused"]


@dataclass(slots=True)
class BatchItem:
    """One request inside a BATCH: its id, time left, and its meta + body frames.
    ``stages``: its caller wants its stages (the worker then asks its dependency calls
    for theirs and answers them in the RESULT)."""

    request_id: bytes
    timeout_ms: int
    frames: list  # [meta, *body]
    stages: bool = False


@dataclass(slots=True)
class Batch:
    """Work for a worker: one or more requests to one endpoint, run as one call."""

    batch_id: int
    endpoint: str
    items: list  # list[BatchItem]

    def to_frames(self) -> list:
        header = pack_map([[it.request_id, it.timeout_ms, len(it.frames), 1] if it.stages
                           else [it.request_id, it.timeout_ms, len(it.frames)]
                           for it in self.items])
        frames = [PROTOCOL, _BATCH, _BATCH_ID.pack(self.batch_id),
                  self.endpoint.encode(), header]
        for it in self.items:
            frames.extend(it.frames)
        return frames


def _split_items(header: Any, payload: Sequence[Frame], what: str) -> list[tuple[list, list]]:
    """Pair each header entry ``[id, x, n_frames]`` (or ``[id, x, n_frames, stages]``) with
    its frames of ``payload``."""
    if not isinstance(header, list) or not header:
        raise ProtocolError(f"{what} header must be a non-empty list")
    out: list[tuple[list, list]] = []
    pos = 0
    for entry in header:
        if not isinstance(entry, list) or len(entry) not in (3, 4) \
                or not isinstance(entry[2], int) or entry[2] < 1:
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
    raw_id = raw(rest[0])
    if len(raw_id) != _BATCH_ID.size:
        raise ProtocolError("BATCH id must be 8 bytes")
    header = unpack_map(rest[2], "BATCH header")
    items = []
    for entry, frames in _split_items(header, rest[3:], "BATCH"):
        if not isinstance(entry[0], bytes) or not isinstance(entry[1], int):
            raise ProtocolError("BATCH header entry has a bad request id or timeout")
        items.append(BatchItem(entry[0], entry[1], frames, len(entry) == 4 and entry[3] == 1))
    return Batch(_BATCH_ID.unpack(raw_id)[0], text(rest[1], "endpoint"), items)


@dataclass(slots=True)
class ResultItem:
    """The outcome of one request of a batch: status and its meta + body frames.
    ``stages`` (for a request that wants them): the stages of the dependency calls that
    answering it made, which the broker puts after its own stage in the REPLY."""

    request_id: bytes
    status: Status
    frames: list  # [meta, *body]
    stages: list | None = None


@dataclass(slots=True)
class Result:
    """A worker's answer to a BATCH; ``exec_s`` is how long the batch ran (the batching
    policy learns from it), split into ``input_s`` (decoding and merging the inputs),
    ``infer_s`` (the user function) and ``output_s`` (checking, splitting and encoding the
    answers); seconds, 0 when not measured."""

    batch_id: int
    exec_s: float
    items: list  # list[ResultItem]
    input_s: float = 0.0
    infer_s: float = 0.0
    output_s: float = 0.0

    def to_frames(self) -> list:
        header = pack_map({"exec_s": self.exec_s, "input_s": self.input_s,
                           "infer_s": self.infer_s, "output_s": self.output_s, "items": [
                               [it.request_id, int(it.status), len(it.frames)]
                               + ([it.stages] if it.stages is not None else [])
                               for it in self.items]})
        frames = [PROTOCOL, _RESULT, _BATCH_ID.pack(self.batch_id), header]
        for it in self.items:
            frames.extend(it.frames)
        return frames


def parse_result(rest: Sequence[Frame]) -> Result:
    """Parse the frames after the command of a RESULT."""
    if len(rest) < 3:
        raise ProtocolError("RESULT is too short")
    raw_id = raw(rest[0])
    if len(raw_id) != _BATCH_ID.size:
        raise ProtocolError("RESULT batch id must be 8 bytes")
    header = unpack_map(rest[1], "RESULT header")
    if not isinstance(header, dict) or not isinstance(header.get("exec_s"), (int, float)):
        raise ProtocolError("RESULT header must be a map with exec_s")
    items = []
    for entry, frames in _split_items(header.get("items"), rest[2:], "RESULT"):
        status = status_from_code(entry[1])
        if status is None:
            raise ProtocolError(f"RESULT has unknown status {entry[1]!r}")
        if not isinstance(entry[0], bytes):
            raise ProtocolError("RESULT item has a bad request id")
        stages = parse_stages(entry[3], "RESULT stages") if len(entry) == 4 else None
        items.append(ResultItem(entry[0], status, frames, stages))
    get = header.get
    input_s, infer_s, output_s = get("input_s", 0.0), get("infer_s", 0.0), get("output_s", 0.0)
    for t in (input_s, infer_s, output_s):
        if not isinstance(t, (int, float)) or isinstance(t, bool) or t < 0:
            raise ProtocolError(f"RESULT {', '.join(_TIMINGS)} must be numbers of at least 0")
    return Result(_BATCH_ID.unpack(raw_id)[0], float(header["exec_s"]), items,
                  float(input_s), float(infer_s), float(output_s))


_TIMINGS = ("input_s", "infer_s", "output_s")  # optional RESULT header keys (absent: 0)
