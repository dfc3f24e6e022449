"""The job channel of the wire protocol (ZS1): job states and the PUSH/PULL messages.

The broker PUSHes JOB and CANCEL to a worker's job lane (its PULL socket);
the lane PUSHes EVENT messages (started, progress, and how the execution
ended) to the broker's PULL sink. Every job message carries the job id and
the attempt number, which together name one lease: an event for another
attempt than the current one is stale. ``docs/protocol.md`` has the layout.
Inputs and results are codec payloads with every array inline (one frame),
opaque to the broker.
"""
from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from zeroserve.wire.envelope import PROTOCOL, Frame, ProtocolError, pack_map, raw, unpack_map


class JobState(str, enum.Enum):  # noqa: UP042 (StrEnum needs 3.11)
    """Where a job is: queued -> running -> succeeded | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class JobCommand(bytes, enum.Enum):
    """The command byte of a job-channel message (frame 1)."""

    JOB = b"\x20"     # broker -> worker lane: run this attempt
    CANCEL = b"\x21"  # broker -> worker lane: stop this attempt
    EVENT = b"\x22"   # worker lane -> broker sink


class EventKind(str, enum.Enum):  # noqa: UP042
    """What a lane reports about one attempt."""

    STARTED = "started"
    PROGRESS = "progress"    # also sent as a keep-alive while the attempt runs
    SUCCEEDED = "succeeded"  # carries the result frame
    FAILED = "failed"        # carries the error
    CANCELLED = "cancelled"
    REJECTED = "rejected"    # the lane had no free slot: not run, not an attempt

    @property
    def final(self) -> bool:
        return self not in (EventKind.STARTED, EventKind.PROGRESS)


@dataclass(slots=True)
class JobDispatch:
    """One attempt of a job, sent to a lane; ``lease_s`` is how long the broker waits for
    a sign of life, ``timeout_s`` how long the attempt may run."""

    job_id: str
    task: str
    attempt: int
    lease_s: float
    timeout_s: float
    inputs: Frame

    def to_frames(self) -> list:
        return [PROTOCOL, JobCommand.JOB.value, pack_map({
            "job_id": self.job_id, "task": self.task, "attempt": self.attempt,
            "lease_s": self.lease_s, "timeout_s": self.timeout_s}), self.inputs]


@dataclass(slots=True)
class JobCancel:
    """Ask a lane to stop an attempt (the task sees ``ctx.cancelled``)."""

    job_id: str
    attempt: int

    def to_frames(self) -> list:
        return [PROTOCOL, JobCommand.CANCEL.value,
                pack_map({"job_id": self.job_id, "attempt": self.attempt})]


@dataclass(slots=True)
class JobEvent:
    """A lane's report on one attempt; ``result`` only with SUCCEEDED."""

    job_id: str
    attempt: int
    worker_id: str
    kind: EventKind
    progress: float | None = None
    error: str | None = None
    result: Frame | None = None

    def to_frames(self) -> list:
        head = {"job_id": self.job_id, "attempt": self.attempt, "worker_id": self.worker_id,
                "kind": self.kind.value}
        if self.progress is not None:
            head["progress"] = self.progress
        if self.error is not None:
            head["error"] = self.error
        frames = [PROTOCOL, JobCommand.EVENT.value, pack_map(head)]
        if self.result is not None:
            frames.append(self.result)
        return frames


@dataclass(slots=True)
class JobLaneInfo:
    """The ``jobs`` map of a READY: the lane's slots, its two addresses, its tasks, and the
    attempts it runs now (so that a restarted broker knows which slots are taken)."""

    slots: int
    pull: str
    push: str
    tasks: dict
    running: list = field(default_factory=list)  # [[job_id, attempt], ...]

    def describe(self) -> dict:
        return {"slots": self.slots, "pull": self.pull, "push": self.push, "tasks": self.tasks,
                "running": self.running}


def parse_lane(jobs: dict) -> JobLaneInfo | None:
    """The lane of a READY's ``jobs`` map, or None when the worker has none."""
    if not jobs or not jobs.get("slots"):
        return None
    try:
        lane = JobLaneInfo(int(jobs["slots"]), str(jobs["pull"]), str(jobs["push"]),
                           dict(jobs.get("tasks") or {}),
                           [[str(j), int(a)] for j, a in jobs.get("running") or []])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"READY jobs map is malformed: {exc}") from None
    if not 1 <= lane.slots <= 4096 or not lane.pull or not lane.push:
        raise ProtocolError("READY jobs map needs 1..4096 slots and two addresses")
    return lane


def _split(frames: Sequence[Frame]) -> tuple[JobCommand, dict, Sequence[Frame]]:
    if len(frames) < 3 or raw(frames[0]) != PROTOCOL:
        raise ProtocolError("job message is too short or not ZS1")
    try:
        command = JobCommand(raw(frames[1]))
    except ValueError:
        raise ProtocolError(f"unknown job command {raw(frames[1])[:8]!r}") from None
    head = unpack_map(frames[2], "job message header")
    if not isinstance(head, dict) or not isinstance(head.get("job_id"), str) \
            or not isinstance(head.get("attempt"), int):
        raise ProtocolError("job message header needs job_id and attempt")
    return command, head, frames[3:]


def parse_lane_message(frames: Sequence[Frame]) -> JobDispatch | JobCancel:
    """Parse what a lane's PULL socket received (JOB or CANCEL)."""
    command, head, rest = _split(frames)
    if command is JobCommand.CANCEL:
        return JobCancel(head["job_id"], head["attempt"])
    if command is not JobCommand.JOB or len(rest) != 1:
        raise ProtocolError(f"{command.name} is not valid on a job lane")
    try:
        return JobDispatch(head["job_id"], str(head["task"]), head["attempt"],
                           float(head["lease_s"]), float(head["timeout_s"]), rest[0])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"JOB header is missing or has a bad field: {exc}") from None


def parse_event(frames: Sequence[Frame]) -> JobEvent:
    """Parse what the broker's sink received (EVENT)."""
    command, head, rest = _split(frames)
    if command is not JobCommand.EVENT or len(rest) > 1:
        raise ProtocolError(f"{command.name} is not valid on the job sink")
    try:
        kind = EventKind(head["kind"])
        progress = head.get("progress")
        return JobEvent(head["job_id"], head["attempt"], str(head["worker_id"]), kind,
                        None if progress is None else float(progress),
                        None if head.get("error") is None else str(head["error"]),
                        rest[0] if rest else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"EVENT header is missing or has a bad field: {exc}") from None
