"""Every zeroserve setting: one frozen dataclass per section, layered in one place.

The defaults are the dataclasses' field defaults below. Values are layered:
the defaults, then a YAML file (``--config``), then ``ZEROSERVE_*`` environment
variables, then command-line flags; :func:`load_settings` does it, for the CLI
and for tests alike. The variable for ``heartbeat.interval_s`` is
``ZEROSERVE_HEARTBEAT_INTERVAL_S``. A daemon receives its sections typed
(``settings.broker``, ``settings.heartbeat``...), never a string lookup.

Renamed settings (:data:`RENAMED`) are still read under their old name, with
one warning per old name.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from zeroserve import __version__

log = logging.getLogger("zeroserve.config")

MiB = 1024 * 1024


@dataclass(frozen=True)
class BrokerSettings:
    """``broker.*``: the broker's sockets, queues and metrics."""

    frontend: str = "tcp://127.0.0.1:5555"  # bound; gateways connect here
    backend: str = "tcp://127.0.0.1:5556"   # bound; workers connect here
    max_queue: int = 1000                   # waiting requests per endpoint
    retry_after_s: int = 1                  # Retry-After on a full queue
    max_dispatches: int = 3                 # dispatches of one request while workers die
    metrics_host: str = "127.0.0.1"         # Prometheus metrics of the broker
    metrics_port: int = 8002                # 0: off


@dataclass(frozen=True)
class GatewaySettings:
    """``gateway.*``: where a gateway listens and which broker it calls."""

    frontend: str = "tcp://127.0.0.1:5555"  # the broker's frontend, as seen from here
    http_host: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001                   # Open Inference Protocol over gRPC; 0: off
    reuse_port: bool = False                # share the HTTP and gRPC ports with gateways of
                                            # this cluster (SO_REUSEPORT; scripts/cluster)
    api_keys_file: str = ""                 # YAML of accepted API keys; empty: no keys needed
    public_paths: tuple[str, ...] = ("/healthz", "/readyz", "/v2/health/live",
                                     "/v2/health/ready", "/metrics")  # open without a key
    max_body_bytes: int = 256 * MiB
    schema_refresh_s: float = 2.0
    max_json_depth: int = 64                # nested arrays/objects in a JSON body; more: 400
    header_timeout_s: float = 10.0          # from a request's first byte to its last header
    idle_timeout_s: float = 60.0            # a kept-alive HTTP connection waiting for a
                                            # request; gRPC: max connection idle
    body_timeout_s: float = 60.0            # from the last header to the body's last byte
    max_connections: int = 10000            # open HTTP connections; more are closed at once
    accept_pause_s: float = 0.25            # out of file descriptors: stop accepting this long
    grpc_keepalive_s: float = 60.0          # gRPC keep-alive ping interval
    grpc_keepalive_timeout_s: float = 20.0  # an unanswered ping closes the connection
    tls_cert_file: str = ""                 # PEM certificate (chain): HTTP and gRPC speak TLS;
                                            # empty: plain
    tls_key_file: str = ""                  # PEM private key of tls_cert_file
    tls_client_ca_file: str = ""            # PEM CA: clients need a certificate it issued (mTLS)
    server_name: str = "zeroserve"          # what OIP server metadata (GET /v2) names
    server_version: str = __version__       # ... and the version it gives
    shm_key_prefix: str = "/zeroserve_"     # system shared memory: only keys under it may be
                                            # registered; empty: the extension is off
    shm_direct: bool = True                 # a worker sharing this host's /dev/shm reads
                                            # shared memory inputs in place (docs/oip.md)
    cors_allowed_origins: tuple[str, ...] = ()  # origins browsers may call from
                                            # ("https://app.example", "*": any); empty: CORS off
    cors_allowed_methods: tuple[str, ...] = ("GET", "POST", "DELETE")  # ... with these methods
    cors_allowed_headers: tuple[str, ...] = ("Authorization", "Content-Type", "Accept",
                                             "X-API-Key", "X-Zeroserve-Timeout")  # ... and headers
    cors_exposed_headers: tuple[str, ...] = ("Retry-After",)  # answer headers scripts may read
    cors_max_age_s: int = 600               # how long a browser keeps a preflight's answer
    request_log_path: str = ""              # one JSON line per HTTP request: a file, "-" for
                                            # standard output; empty: off
    request_log_sample: float = 1.0         # the share of requests logged (0..1)
    event_loop: str = "asyncio"             # asyncio, uvloop, auto (uvloop where installed)


@dataclass(frozen=True)
class WorkerSettings:
    """``worker.*``: a worker's broker, slots, threads and job lane."""

    backend: str = "tcp://127.0.0.1:5556"   # the broker's backend, as seen from here
    frontend: str = "tcp://127.0.0.1:5555"  # the broker's frontend: dependency calls
    slots: int = 2                          # batches held at once: running + queued
    threads: int = 1                        # sync calls run at once (1: model need not be
                                            # thread-safe)
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 5.0
    drain_timeout_s: float = 30.0
    job_slots: int = 1                      # jobs run at once, each in its own process
                                            # (0: no job lane)
    job_host: str = ""                      # address the job lane binds and announces
                                            # ("": the one facing the broker)
    job_priority: str = "idle"              # CPU priority of job processes: idle (only
                                            # what real-time work leaves), low, normal
    shm_key_prefix: str = "/zeroserve_"     # shared memory inputs read in place: only keys
                                            # under it (gateway.shm_key_prefix); empty: none


@dataclass(frozen=True)
class JobsSettings:
    """``jobs.*``: the broker's durable job store and its retry rules."""

    store_path: str = ""          # SQLite file ("": $XDG_STATE_HOME/zeroserve/jobs-<port>.sqlite3)
    retention_s: float = 86400.0  # finished jobs are kept this long
    lease_s: float = 30.0         # no start/progress for this long: re-queued
    retry_backoff_s: float = 1.0  # first retry wait; doubles per attempt
    retry_backoff_max_s: float = 60.0
    max_input_bytes: int = 64 * MiB  # encoded inputs of one job; more is 413
    max_result_bytes: int = 64 * MiB  # encoded result of one job; more fails the job


@dataclass(frozen=True)
class CurveSettings:
    """``curve.*``: encryption + authentication between daemons."""

    enabled: bool = False
    secret_key_file: str = ""   # this daemon's key pair (zeroserve keys generate)
    broker_key_file: str = ""   # gateways, workers, status: the broker's key
    allowed_keys_dir: str = ""  # broker: public keys of the peers it lets in


@dataclass(frozen=True)
class HeartbeatSettings:
    """``heartbeat.*``: how often peers ping, and how many misses make one dead."""

    interval_s: float = 1.0
    liveness: int = 3  # missed intervals before a peer is dead

    @property
    def liveness_s(self) -> float:
        """Seconds of silence after which a peer is dead."""
        return self.interval_s * self.liveness


@dataclass(frozen=True)
class RequestSettings:
    """``request.*``: the deadlines of real-time requests."""

    default_timeout_s: float = 30.0
    max_timeout_s: float = 600.0


@dataclass(frozen=True)
class StreamSettings:
    """Streams (generator endpoints, ``docs/streaming.md``): the window of chunks in flight
    between a worker and the client's reader, and the limits on a stream's time."""

    window_chunks: int = 64          # chunks a worker sends before the reader's credit
    window_bytes: int = 1 * MiB      # bytes of them (one larger chunk goes alone)
    idle_timeout_s: float = 30.0     # longest gap between chunks, or waiting for the reader
    total_timeout_s: float = 0.0     # longest stream; 0: no limit


@dataclass(frozen=True)
class BatchingSettings:
    """``batching.*``: per-endpoint overrides of the declared batching limits."""

    overrides: dict = field(default_factory=dict)  # {"service.endpoint": {"max_batch_size": n,
                                                   #  "max_latency_ms": ms}}


@dataclass(frozen=True)
class ClusterSettings:
    """``cluster.*``: which cluster a daemon belongs to; a broker refuses the workers and the
    control calls of another one (``zeroserve serve`` names a fresh one per run)."""

    name: str = "default"


@dataclass(frozen=True)
class TracingSettings:
    """``tracing.*``: OpenTelemetry traces of every daemon (``docs/tracing.md``); off while
    ``otlp_endpoint`` is empty. On, it needs ``pip install 'zeroserve[tracing]'``."""

    otlp_endpoint: str = ""   # OTLP/HTTP (protobuf) collector URL, e.g. http://collector:4318
                              # (/v1/traces is added to a URL without a path); empty: off
    sample_ratio: float = 1.0  # share of new traces recorded (0..1); a caller's sampled flag
                               # in traceparent is followed
    service_name: str = ""    # the spans' service.name; empty: zeroserve-<gateway|broker|worker>


@dataclass(frozen=True)
class LogSettings:
    """``log.*``."""

    level: str = "INFO"


@dataclass(frozen=True)
class Settings:
    """Every section; ``settings.heartbeat.interval_s``."""

    broker: BrokerSettings = field(default_factory=BrokerSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    jobs: JobsSettings = field(default_factory=JobsSettings)
    curve: CurveSettings = field(default_factory=CurveSettings)
    heartbeat: HeartbeatSettings = field(default_factory=HeartbeatSettings)
    request: RequestSettings = field(default_factory=RequestSettings)
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """The settings as plain data (tuples become lists), as a YAML file would hold them."""
        return {name: {k: list(v) if isinstance(v, tuple) else v
                       for k, v in dataclasses.asdict(section).items()}
                for name, section in ((f.name, getattr(self, f.name))
                                      for f in dataclasses.fields(self))}


SECTIONS: dict[str, Any] = {f.name: f.default_factory for f in dataclasses.fields(Settings)}  # type: ignore[misc]

# old dotted name -> new one; read for one release, with a warning
RENAMED: dict[str, str] = {
    "gateway.broker": "gateway.frontend",
    "worker.broker": "worker.backend",
    "worker.jobs_host": "worker.job_host",
    "broker.max_attempts": "broker.max_dispatches",  # a task's max_attempts counts executions
}


class ConfigError(ValueError):
    """A setting that is unknown or has the wrong type."""


def env_name(path: str) -> str:
    """``heartbeat.interval_s`` -> ``ZEROSERVE_HEARTBEAT_INTERVAL_S``."""
    return "ZEROSERVE_" + path.replace(".", "_").upper()


def _defaults() -> dict[str, dict[str, Any]]:
    return {name: dataclasses.asdict(make()) for name, make in SECTIONS.items()}


_DEFAULTS = _defaults()


def _coerce(section: str, key: str, value: Any) -> Any:
    default = _DEFAULTS[section][key]
    if isinstance(value, str) and not isinstance(default, str):
        value = yaml.safe_load(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{section}.{key} must be a mapping")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{section}.{key} must be a list of strings, got {value!r}")
        return tuple(value)
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{section}.{key} must be {kind.__name__}, got {value!r}")
    return value


def _current_name(path: str, origin: str, warned: set[str]) -> str:
    new = RENAMED.get(path)
    if new is None:
        return path
    if path not in warned:
        warned.add(path)
        old_env = f" ({env_name(path)} -> {env_name(new)})" if origin == "environment" else ""
        log.warning("config: %s is deprecated and will be removed; read as %s, rename it in "
                    "the %s%s", path, new, origin, old_env)
    return new


def _merge(target: dict, layer: Mapping, origin: str, warned: set[str]) -> None:
    """Write ``layer`` ({section: {key: value}}) over ``target``; old names first, so that a
    layer giving both the old and the new name keeps the new one's value."""
    items: list[tuple[str, Any]] = []
    for section, values in layer.items():
        if section not in SECTIONS or not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: unknown section {section!r}")
        items += [(f"{section}.{key}", value) for key, value in values.items()]
    items.sort(key=lambda item: item[0] not in RENAMED)
    for path, value in items:
        section, _, key = _current_name(path, origin, warned).partition(".")
        if key not in _DEFAULTS[section]:
            raise ConfigError(f"{origin}: unknown setting {path}")
        target[section][key] = _coerce(section, key, value)


def env_layer(environ: Mapping[str, str]) -> dict:
    """The settings named by ``ZEROSERVE_*`` variables in ``environ`` (old names included)."""
    paths = [f"{s}.{k}" for s, values in _DEFAULTS.items() for k in values] + list(RENAMED)
    layer: dict[str, dict] = {}
    for path in paths:
        if env_name(path) in environ:
            section, _, key = path.partition(".")
            layer.setdefault(section, {})[key] = environ[env_name(path)]
    return layer


def dotted(overrides: Mapping[str, Any]) -> dict:
    """``{"heartbeat.interval_s": 0.2}`` -> ``{"heartbeat": {"interval_s": 0.2}}``; None skipped."""
    layer: dict[str, dict] = {}
    for path, value in overrides.items():
        if value is None:
            continue
        section, _, key = path.partition(".")
        layer.setdefault(section, {})[key] = value
    return layer


def load_settings(config_file: str | None = None, overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings`: defaults, then the YAML file, then the environment, then
    ``overrides`` (dotted keys, as the CLI flags give them; None values are ignored).

    Raises ConfigError for an unknown name or a value of the wrong type, OSError for a file
    that cannot be read."""
    values = _defaults()
    warned: set[str] = set()
    if config_file:
        with open(config_file, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_file}: top level must be a mapping")
        _merge(values, loaded, config_file, warned)
    _merge(values, env_layer(os.environ if environ is None else environ), "environment", warned)
    _merge(values, dotted(overrides or {}), "command line", warned)
    return Settings(**{name: SECTIONS[name](**values[name]) for name in SECTIONS})
