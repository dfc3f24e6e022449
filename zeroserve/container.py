"""The simple_di container of one zeroserve process: its settings, and the parts tests replace.

A command (``zeroserve broker``...) fills one :class:`Container` from the
layered settings and hands it to the daemon's ``run``, the one composition root
per daemon; ``run`` gives each object the sections and parts it uses. A test
builds its own container and overrides a provider instead of patching a
module::

    parts = Container.of(load_settings(environ={}))
    parts.clock.set(fake_clock)
    parts.heartbeat.set(HeartbeatSettings(interval_s=0.1))

There is no global container: each process (or test) has its own.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import field
from operator import attrgetter
from typing import Any

import zmq
from simple_di import container, providers

from zeroserve.config import (
    BatchingSettings,
    BrokerSettings,
    CurveSettings,
    GatewaySettings,
    HeartbeatSettings,
    JobsSettings,
    LogSettings,
    RequestSettings,
    Settings,
    StreamSettings,
    WorkerSettings,
)


def _static(value: Any) -> Callable[[], providers.Static]:
    return lambda: providers.Static(value)


@container
class Container:
    """Providers of the settings sections, the clocks and the ZeroMQ context.

    Each section provider follows ``settings`` unless it is set itself."""

    settings: providers.Static[Settings] = field(default_factory=_static(Settings()))
    clock: providers.Static[Callable[[], float]] = field(
        default_factory=_static(time.monotonic))          # monotonic seconds
    wall_clock: providers.Static[Callable[[], float]] = field(
        default_factory=_static(time.time))               # seconds since the epoch
    sleep: providers.Static[Callable[[float], None]] = field(default_factory=_static(time.sleep))
    zmq_context: providers.SingletonFactory[zmq.Context] = field(
        default_factory=lambda: providers.SingletonFactory(zmq.Context))  # one per container
    broker: providers.Factory[BrokerSettings] = field(init=False)
    gateway: providers.Factory[GatewaySettings] = field(init=False)
    worker: providers.Factory[WorkerSettings] = field(init=False)
    jobs: providers.Factory[JobsSettings] = field(init=False)
    curve: providers.Factory[CurveSettings] = field(init=False)
    heartbeat: providers.Factory[HeartbeatSettings] = field(init=False)
    request: providers.Factory[RequestSettings] = field(init=False)
    batching: providers.Factory[BatchingSettings] = field(init=False)
    stream: providers.Factory[StreamSettings] = field(init=False)
    log: providers.Factory[LogSettings] = field(init=False)

    def __post_init__(self) -> None:
        for name in ("broker", "gateway", "worker", "jobs", "curve", "heartbeat", "request",
                     "batching", "stream", "log"):
            setattr(self, name, providers.Factory(attrgetter(name), self.settings))

    @classmethod
    def of(cls, settings: Settings) -> Container:
        """A container holding ``settings`` and the real clocks and context."""
        parts = cls()
        parts.settings.set(settings)
        return parts
