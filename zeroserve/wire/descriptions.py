"""Typed descriptions of what a cluster serves: endpoints, tasks, services, and jobs.

One contract from worker to broker to gateway. A worker's READY carries an
:class:`EndpointDescription` per endpoint (and its job lane one
:class:`TaskDescription` map per task); the broker overlays the batching limits
it applies (``dataclasses.replace``) and answers MODELS with one
:class:`ServiceDescription` per service; the gateway reads them back once per
MODELS answer. A job's status travels as a :class:`JobDescription`.

Each description owns its defaults. ``to_map`` gives the msgpack (and JSON) map
that travels; ``from_map`` reads one back, filling absent keys with the
defaults and raising :class:`~zeroserve.wire.envelope.ProtocolError` with the
reason on a bad map (or one that lacks a key without a default). A description's
name, and its service's, are the keys it travels under, not part of its map.
Schemas are :class:`zeroserve.schema.Field`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

from zeroserve.schema import Field
from zeroserve.wire.envelope import ProtocolError, Status
from zeroserve.wire.jobs import JobState

TASK_TIMEOUT_S = 600.0  # what ``@zeroserve.task`` gives a task that names no timeout
TASK_MAX_ATTEMPTS = 3   # ... and no attempt limit

_OUTPUT = Field("output")

D = TypeVar("D")


def _map(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a map, not {type(value).__name__}")
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{what} must be a non-empty string")
    return value


def _bool(m: Mapping[str, Any], key: str, default: bool, what: str) -> bool:
    value = m.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"{what}: {key} must be a boolean")
    return value


def _int(m: Mapping[str, Any], key: str, default: int, least: int, what: str) -> int:
    value = m.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ProtocolError(f"{what}: {key} must be an integer of at least {least}")
    return value


def _number(m: Mapping[str, Any], key: str, default: float, what: str) -> float:
    """A finite number of at least 0."""
    value = m.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) \
            or not math.isfinite(value) or value < 0:
        raise ProtocolError(f"{what}: {key} must be a finite number of at least 0")
    return float(value)


def _time(m: Mapping[str, Any], key: str, what: str) -> float | None:
    """A time in seconds, or None (absent, or not known yet)."""
    return None if m.get(key) is None else _number(m, key, 0.0, what)


def _text(m: Mapping[str, Any], key: str, what: str) -> str | None:
    value = m.get(key)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"{what}: {key} must be a string or null")
    return value


def _fields(m: Mapping[str, Any], key: str, what: str) -> tuple[Field, ...]:
    """The list of field maps under ``key`` (absent: none)."""
    value = m.get(key, [])
    if not isinstance(value, list):
        raise ProtocolError(f"{what}: {key} must be a list")
    return tuple(Field.from_map(f, f"{what} {key[:-1]}") for f in value)


def _schema(m: Mapping[str, Any], what: str) -> tuple[tuple[Field, ...], Field]:
    return (_fields(m, "inputs", what),
            Field.from_map(m.get("output", _OUTPUT.to_map()), f"{what} output"))


def _named(value: Any, what: str, read: Callable[[str, Any], D]) -> dict[str, D]:
    """``{name: read(name, map)}`` of a map of descriptions by name."""
    return {_name(name, f"{what} name"): read(name, m) for name, m in _map(value, what).items()}


OPENAI_KINDS = ("chat", "completion")  # what ``@api(openai=...)`` may declare


def _openai_kind(m: Mapping[str, Any], what: str) -> str:
    value = m.get("openai", "")
    if value not in ("", *OPENAI_KINDS):
        raise ProtocolError(f"{what}: openai must be one of {list(OPENAI_KINDS)} or empty")
    return str(value)


@dataclass(frozen=True)
class EndpointDescription:
    """One real-time endpoint of ``service``: its schema and its batching settings.

    ``max_batch_size`` (rows) and ``max_latency_ms`` are 1 and 0 unless ``batchable``;
    requests merge along ``batch_dim``. ``retry_on_worker_loss`` re-sends a request
    whose worker died (False for endpoints with side effects). ``streams``: the endpoint is a
    generator, answered as a stream of chunks (never batchable). ``outputs``: the named outputs
    the endpoint declares (it answers a dict of exactly these; empty: ``output`` says it all).
    ``openai``: the OpenAI-compatible API serves it as a ``"chat"`` or ``"completion"`` model
    (empty: it does not). ``version``: the version of its service that declares it (like the
    names, the key it travels under: its service's READY or MODELS entry, not its own map); a
    REQUEST built from it names that version.
    """

    service: str
    name: str
    inputs: tuple[Field, ...] = ()
    output: Field = _OUTPUT
    batchable: bool = False
    max_batch_size: int = 1
    batch_dim: int = 0
    max_latency_ms: float = 0.0
    retry_on_worker_loss: bool = True
    streams: bool = False
    outputs: tuple[Field, ...] = ()
    openai: str = ""
    version: int = 1

    def to_map(self) -> dict[str, Any]:
        """The map that READY and MODELS carry under the endpoint's name."""
        return {"openai": self.openai,
                "inputs": [f.to_map() for f in self.inputs], "output": self.output.to_map(),
                "batchable": self.batchable, "max_batch_size": self.max_batch_size,
                "max_latency_ms": self.max_latency_ms, "batch_dim": self.batch_dim,
                "retry_on_worker_loss": self.retry_on_worker_loss, "streams": self.streams,
                "outputs": [f.to_map() for f in self.outputs]}

    @classmethod
    def from_map(cls, service: str, name: str, value: Any, version: int = 1
                 ) -> EndpointDescription:
        """Read endpoint ``name`` of ``service`` (at ``version``) from its map; ProtocolError
        if it is bad."""
        what = f"endpoint {service}.{name}"
        m = _map(value, what)
        inputs, output = _schema(m, what)
        return cls(_name(service, "service name"), _name(name, "endpoint name"), inputs,
                   output, _bool(m, "batchable", cls.batchable, what),
                   _int(m, "max_batch_size", cls.max_batch_size, 1, what),
                   _int(m, "batch_dim", cls.batch_dim, 0, what),
                   _number(m, "max_latency_ms", cls.max_latency_ms, what),
                   _bool(m, "retry_on_worker_loss", cls.retry_on_worker_loss, what),
                   _bool(m, "streams", cls.streams, what),
                   outputs=_fields(m, "outputs", what), openai=_openai_kind(m, what),
                   version=version)


@dataclass(frozen=True)
class TaskDescription:
    """One task (an endpoint run as a durable job): its schema, the bound on one execution
    (``timeout_s``) and how many executions a job gets (``max_attempts``)."""

    name: str
    inputs: tuple[Field, ...] = ()
    output: Field = _OUTPUT
    timeout_s: float = TASK_TIMEOUT_S
    max_attempts: int = TASK_MAX_ATTEMPTS

    def to_map(self) -> dict[str, Any]:
        """The map that a READY's job lane and MODELS carry under the task's name."""
        return {"inputs": [f.to_map() for f in self.inputs], "output": self.output.to_map(),
                "timeout_s": self.timeout_s, "max_attempts": self.max_attempts}

    @classmethod
    def from_map(cls, name: str, value: Any) -> TaskDescription:
        """Read task ``name`` from its map; ProtocolError if it is bad."""
        what = f"task {name}"
        m = _map(value, what)
        inputs, output = _schema(m, what)
        timeout_s = _number(m, "timeout_s", cls.timeout_s, what)
        if not timeout_s:
            raise ProtocolError(f"{what}: timeout_s must be positive")
        return cls(_name(name, "task name"), inputs, output, timeout_s,
                   _int(m, "max_attempts", cls.max_attempts, 1, what))


def endpoints_from_map(service: str, value: Any, version: int = 1
                       ) -> dict[str, EndpointDescription]:
    """The endpoints of a map ``{name: endpoint map}`` (READY's, a MODELS service's) of
    ``service`` at ``version``."""
    return _named(value, f"endpoints of {service}",
                  lambda name, m: EndpointDescription.from_map(service, name, m, version))


def _versions(value: Any, what: str) -> dict[int, Any]:
    """``{version: value}`` of a map keyed by versions as decimal strings (JSON's keys)."""
    out = {}
    for key, item in _map(value, what).items():
        if not isinstance(key, str) or not key.isdigit() or int(key) < 1:
            raise ProtocolError(f"{what}: {key!r} is not a version (a decimal of at least 1)")
        out[int(key)] = item
    return out


def _traffic(value: Any, what: str) -> dict[int, int]:
    """A traffic split ``{version: percent}``; its sum is checked where it is set."""
    split = _versions(value, f"{what} traffic")
    for version, percent in split.items():
        if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
            raise ProtocolError(f"{what}: traffic of version {version} must be a percent")
    return split


def tasks_from_map(value: Any) -> dict[str, TaskDescription]:
    """The tasks of a map ``{name: task map}`` (a job lane's, a MODELS service's)."""
    return _named(value, "tasks", TaskDescription.from_map)


class TaskNotFound(LookupError):
    """A job names a task its service does not have: ``status`` is NOT_FOUND, or
    BAD_REQUEST when the name is a real-time endpoint of the service."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServiceDescription:
    """A service as MODELS describes it: its endpoints, its tasks, and how many workers
    serve it now (0 in a worker's own declaration), at ``version``.

    MODELS describes a service by its latest version served (the highest one that has
    workers, else the highest known), with the workers of all its versions; its ``versions``
    then hold every version served when
    there are several, itself included, each described alone (with no ``versions`` of its
    own; empty: ``version`` is the only one); ``traffic`` is
    the operator's split of version-less calls (``{version: percent}``; empty: none, they go
    to the latest version)."""

    name: str
    endpoints: Mapping[str, EndpointDescription] = field(default_factory=dict)
    tasks: Mapping[str, TaskDescription] = field(default_factory=dict)
    workers: int = 0
    version: int = 1
    versions: Mapping[int, ServiceDescription] = field(default_factory=dict)
    traffic: Mapping[int, int] = field(default_factory=dict)

    def at(self, version: int) -> ServiceDescription | None:
        """This service's description at ``version``, or None if it is not served."""
        if self.versions:
            return self.versions.get(version)
        return self if version == self.version else None

    def served_versions(self) -> list[int]:
        """Every version served, ascending (just ``version`` for a service described alone)."""
        return sorted(self.versions) if self.versions else [self.version]

    def task(self, name: str) -> TaskDescription:
        """The task ``name``; raises :class:`TaskNotFound` if the service has none."""
        found = self.tasks.get(name)
        if found is not None:
            return found
        if name in self.endpoints:
            raise TaskNotFound(Status.BAD_REQUEST, f"'{self.name}/{name}' is a real-time "
                                                   "endpoint, not a task: call it directly")
        raise TaskNotFound(Status.NOT_FOUND, f"service '{self.name}' has no task '{name}'")

    def to_map(self) -> dict[str, Any]:
        """The map that MODELS carries under the service's name (and ``/v1/services``
        serves)."""
        m: dict[str, Any] = {"endpoints": {n: e.to_map() for n, e in self.endpoints.items()},
                             "tasks": {n: t.to_map() for n, t in self.tasks.items()},
                             "workers": self.workers, "version": self.version}
        if self.versions:
            m["versions"] = {str(v): d.to_map() for v, d in self.versions.items()}
        if self.traffic:
            m["traffic"] = {str(v): p for v, p in self.traffic.items()}
        return m

    @classmethod
    def from_map(cls, name: str, value: Any) -> ServiceDescription:
        """Read service ``name`` from its map; ProtocolError if it (or a part) is bad."""
        what = f"service {name}"
        m = _map(value, what)
        version = _int(m, "version", 1, 1, what)
        versions = {}
        for v, nested in _versions(m.get("versions", {}), f"{what} versions").items():
            if isinstance(nested, dict) and "versions" in nested:
                raise ProtocolError(f"{what}: version {v} may not list versions")
            versions[v] = cls.from_map(name, {**_map(nested, f"{what} version {v}"),
                                              "version": v})
        if versions and version not in versions:
            raise ProtocolError(f"{what}: its versions lack its own, {version}")
        return cls(_name(name, "service name"),
                   endpoints_from_map(name, m.get("endpoints", {}), version),
                   tasks_from_map(m.get("tasks", {})), _int(m, "workers", 0, 0, what),
                   version, versions, _traffic(m.get("traffic", {}), what))


def find_task(services: Mapping[str, ServiceDescription], service: str,
              task: str) -> TaskDescription:
    """The task a job names, among ``services``; raises :class:`TaskNotFound` (404 for an
    unknown service or task, 400 for a real-time endpoint)."""
    known = services.get(service)
    if known is None:
        raise TaskNotFound(Status.NOT_FOUND, f"unknown service '{service}'")
    return known.task(task)


@dataclass(frozen=True)
class JobDescription:
    """A job as its callers see it (the ``job`` of every job control answer); no inputs,
    no result. Times are wall-clock seconds. Its map names ``task`` ``endpoint``, as the
    REST, gRPC and SDK job APIs do."""

    id: str
    service: str
    task: str
    state: JobState
    attempts: int
    max_attempts: int
    progress: float
    error: str | None
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    cancel_requested: bool = False
    idempotency_key: str | None = None

    def to_map(self) -> dict[str, Any]:
        """The job map of the control answers (``None`` for what is not known yet)."""
        m = {_PUBLIC.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}
        m["state"] = self.state.value
        return m

    @classmethod
    def from_map(cls, value: Any) -> JobDescription:
        """Read a job map; ProtocolError if it is bad (or lacks a key without a default)."""
        m = _map(value, "job")
        what = f"job {m.get('id')}"
        missing = [_PUBLIC.get(f.name, f.name) for f in fields(cls) if f.default is MISSING
                   and _PUBLIC.get(f.name, f.name) not in m]
        if missing:
            raise ProtocolError(f"{what} lacks {', '.join(missing)}")
        try:
            state = JobState(m.get("state"))
        except ValueError:
            raise ProtocolError(f"{what}: unknown state {m.get('state')!r}") from None
        return cls(_name(m.get("id"), "job id"), _name(m.get("service"), f"{what} service"),
                   _name(m.get("endpoint"), f"{what} endpoint"), state,
                   _int(m, "attempts", 0, 0, what), _int(m, "max_attempts", 1, 1, what),
                   _number(m, "progress", 0.0, what), _text(m, "error", what),
                   _number(m, "created_at", 0.0, what), _number(m, "updated_at", 0.0, what),
                   _time(m, "started_at", what), _time(m, "finished_at", what),
                   _time(m, "expires_at", what), _bool(m, "cancel_requested", False, what),
                   _text(m, "idempotency_key", what))


_PUBLIC = {"task": "endpoint"}  # a job's task, by its public name
JOB_MAP_KEYS = tuple(_PUBLIC.get(f.name, f.name) for f in fields(JobDescription))
"""The keys of a job map, in order (the gRPC ``Job`` message has the same fields)."""
