"""Every zeroserve setting, in one simple_di container.

Values are layered: :data:`DEFAULTS`, then a YAML file (``--config``), then
``ZEROSERVE_*`` environment variables, then command-line flags. The variable
for ``heartbeat.interval_s`` is ``ZEROSERVE_HEARTBEAT_INTERVAL_S``. Daemons
receive a :class:`Settings` and read what they need from it; tests build one
with :func:`load_settings` and overrides, exactly as the CLI does.
"""
from __future__ import annotations

import copy
import os
import socket
from collections.abc import Mapping
from dataclasses import field
from typing import Any, cast

import yaml
from simple_di import container, providers

MiB = 1024 * 1024
REUSE_PORT_SUPPORTED = hasattr(socket, "SO_REUSEPORT")  # Linux, the BSDs, macOS

DEFAULTS: dict[str, dict[str, Any]] = {
    "broker": {
        "frontend": "tcp://127.0.0.1:5555",   # bound; gateways connect here
        "backend": "tcp://127.0.0.1:5556",    # bound; workers connect here
        "max_queue": 1000,                    # waiting requests per endpoint
        "retry_after_s": 1,                   # Retry-After on a full queue
        "max_attempts": 3,                    # dispatches of one request (worker loss)
        "metrics_host": "127.0.0.1",          # Prometheus metrics of the broker
        "metrics_port": 8002,                 # 0: off
    },
    "gateway": {
        "broker": "tcp://127.0.0.1:5555",
        "http_host": "0.0.0.0",
        "http_port": 8000,
        "grpc_port": 8001,                    # Open Inference Protocol over gRPC; 0: off
        "reuse_port": REUSE_PORT_SUPPORTED,   # several gateways share the HTTP and gRPC ports
        "api_keys_file": "",                  # YAML of accepted API keys; empty: no keys needed
        "public_paths": ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready",
                         "/metrics"],         # open without a key when keys are on
        "max_body_bytes": 256 * MiB,
        "schema_refresh_s": 2.0,
    },
    "worker": {
        "broker": "tcp://127.0.0.1:5556",
        "slots": 2,                           # batches held at once: running + queued
        "threads": 1,                         # sync calls run at once (1: model need not be
                                              # thread-safe)
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 5.0,
        "drain_timeout_s": 30.0,
        "job_slots": 1,                       # jobs run at once, each in its own process
                                              # (0: no job lane)
        "jobs_host": "",                      # address the job lane binds and announces
                                              # ("": the one facing the broker)
        "job_priority": "idle",               # CPU priority of job processes: idle (only
                                              # what real-time work leaves), low, normal
    },
    "jobs": {
        "store_path": "",                     # the broker's SQLite job store ("":
                                              # $XDG_STATE_HOME/zeroserve/jobs-<port>.sqlite3)
        "retention_s": 86400.0,               # finished jobs are kept this long
        "lease_s": 30.0,                      # no start/progress for this long: re-queued
        "retry_backoff_s": 1.0,               # first retry wait; doubles per attempt
        "retry_backoff_max_s": 60.0,
        "max_input_bytes": 64 * MiB,          # encoded inputs of one job; more is 413
        "max_result_bytes": 64 * MiB,         # encoded result of one job; more fails the job
    },
    "curve": {                                # encryption + authentication between daemons
        "enabled": False,
        "secret_key_file": "",                # this daemon's key pair (zeroserve keys generate)
        "broker_key_file": "",                # gateways, workers, status: the broker's key
        "allowed_keys_dir": "",               # broker: public keys of the peers it lets in
    },
    "heartbeat": {
        "interval_s": 1.0,
        "liveness": 3,                        # missed intervals before a peer is dead
    },
    "request": {
        "default_timeout_s": 30.0,
        "max_timeout_s": 600.0,
    },
    "batching": {
        "overrides": {},  # {"service.endpoint": {"max_batch_size": n, "max_latency_ms": ms}}
    },
    "log": {
        "level": "INFO",
    },
}


class ConfigError(ValueError):
    """A setting that is unknown or has the wrong type."""


def _env_name(section: str, key: str) -> str:
    return f"ZEROSERVE_{section}_{key}".upper()


def _coerce(section: str, key: str, value: Any) -> Any:
    default = DEFAULTS[section][key]
    if isinstance(default, dict):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{section}.{key} must be a mapping")
        return value
    if isinstance(value, str) and not isinstance(default, str):
        value = yaml.safe_load(value)
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{section}.{key} must be {kind.__name__}, got {value!r}")
    return value


def _merge(target: dict, layer: Mapping, origin: str) -> None:
    for section, values in layer.items():
        if section not in DEFAULTS or not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: unknown section {section!r}")
        for key, value in values.items():
            if key not in DEFAULTS[section]:
                raise ConfigError(f"{origin}: unknown setting {section}.{key}")
            target[section][key] = _coerce(section, key, value)


def env_layer(environ: Mapping[str, str]) -> dict:
    """The settings named by ``ZEROSERVE_*`` variables in ``environ``."""
    layer: dict[str, dict] = {}
    for section, values in DEFAULTS.items():
        for key in values:
            name = _env_name(section, key)
            if name in environ:
                layer.setdefault(section, {})[key] = environ[name]
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


@container
class Settings:
    """The container of every setting; ``settings.config.heartbeat.interval_s.get()``."""

    config: providers.Configuration = field(
        default_factory=lambda: providers.Configuration(cast(Any, copy.deepcopy(DEFAULTS))))

    def get(self, path: str) -> Any:
        """The value at ``section.key``."""
        section, _, key = path.partition(".")
        return self.config[section][key].get()

    def as_dict(self) -> dict:
        return copy.deepcopy(self.config.get())


def load_settings(config_file: str | None = None, overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings`: defaults, then the YAML file, then the environment, then
    ``overrides`` (dotted keys, as the CLI flags give them; None values are ignored)."""
    values = copy.deepcopy(DEFAULTS)
    if config_file:
        with open(config_file, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_file}: top level must be a mapping")
        _merge(values, loaded, config_file)
    _merge(values, env_layer(os.environ if environ is None else environ), "environment")
    _merge(values, dotted(overrides or {}), "command line")
    settings = Settings()
    settings.config.set(cast(Any, values))
    return settings
