"""The broker's socket loop: binds the frontend and backend ROUTERs and feeds BrokerCore."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import signal
import time
from collections.abc import Callable

import zmq

from broker.core import BrokerConfig, BrokerCore
from broker.jobs.desk import JobDesk, JobsConfig, StoreUnusable, jobs_config_from
from broker.jobs.sockets import JobSockets
from broker.metrics import BrokerMetrics
from zeroserve import curve
from zeroserve.config import (
    BatchingSettings,
    BrokerSettings,
    ClusterSettings,
    HeartbeatSettings,
    RequestSettings,
)
from zeroserve.container import Container
from zeroserve.loopsocket import recv_message, recv_message_of, send_message
from zeroserve.sockets import open_socket
from zeroserve.tracing import TracingError, start_tracing

log = logging.getLogger("zeroserve.broker")

_DRAIN_PER_WAKE = 512  # messages read from one socket before looking at the other
# frames received as bytes (the rest stay zero-copy): identity + a REQUEST up to its meta;
# identity + a RESULT up to its header
_FRONTEND_COPIED = 8
_BACKEND_COPIED = 5
_METRICS_EVERY_S = 1.0  # how often the metrics snapshot is refreshed


def config_from(broker: BrokerSettings, heartbeat: HeartbeatSettings, request: RequestSettings,
                batching: BatchingSettings, cluster: ClusterSettings) -> BrokerConfig:
    """What the broker's core needs from the settings sections."""
    return BrokerConfig(
        heartbeat_s=heartbeat.interval_s,
        liveness=heartbeat.liveness,
        max_queue=broker.max_queue,
        retry_after_s=broker.retry_after_s,
        max_dispatches=broker.max_dispatches,
        max_timeout_ms=int(request.max_timeout_s * 1000),
        batching_overrides=batching.overrides,
        cluster=cluster.name,
    )


class BrokerDaemon:
    """Owns the sockets and the clock; every decision is BrokerCore's.

    ``clock`` is monotonic seconds (the core's time), ``wall_clock`` seconds since the epoch
    (the job desk's); :func:`run` passes the container's."""

    def __init__(self, broker: BrokerSettings, config: BrokerConfig, jobs: JobsConfig,
                 keys: curve.Curve | None, context: zmq.Context,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.settings = broker
        self.context = context
        self.clock = clock
        self.curve = keys
        self.authenticator = curve.start_authenticator(self.context, self.curve) \
            if self.curve else None
        self.frontend = open_socket(self.context, zmq.ROUTER, curve=self.curve,
                                    serves=curve.Channel.FRONTEND)
        self.backend = open_socket(self.context, zmq.ROUTER, curve=self.curve,
                                   serves=curve.Channel.BACKEND)
        self.core = BrokerCore(config, self._send_front, self._send_back, clock(), wall_clock())
        self.job_sockets = JobSockets(self.context, self.curve)
        self.jobs = JobDesk(jobs, self.job_sockets, self._send_front, wall_clock)
        self.core.jobs = self.jobs
        self.metrics: BrokerMetrics | None = None
        self._running = False

    def _send_front(self, frames: list) -> None:
        send_message(self.frontend, frames, 0)

    def _send_back(self, frames: list) -> None:
        send_message(self.backend, frames, 0)

    def bind(self) -> tuple[str, str]:
        """Bind both sockets; return the endpoints actually bound (port 0 resolved)."""
        self.frontend.bind(self.settings.frontend)
        self.backend.bind(self.settings.backend)
        return (self.frontend.getsockopt_string(zmq.LAST_ENDPOINT),
                self.backend.getsockopt_string(zmq.LAST_ENDPOINT))

    def stop(self, *_: object) -> None:
        self._running = False

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        poller.register(self.job_sockets.sink, zmq.POLLIN)
        core = self.core
        self._running = True
        next_tick = next_snapshot = 0.0
        while self._running:
            now = self.clock()
            if now >= next_tick:
                core.on_tick(now)
                self.jobs.flush()
                next_tick = now + core.next_wake(now)
                if self.metrics is not None and now >= next_snapshot:
                    self.metrics.update(core.stats(now))
                    next_snapshot = now + _METRICS_EVERY_S
            # rounded up: a timeout rounded down to 0 ms turns the last millisecond before
            # each tick into a busy loop of polls
            ready = dict(poller.poll(math.ceil(max(0.0, next_tick - now) * 1000)))
            if self.backend in ready:
                self._drain(self.backend, core.on_backend, _BACKEND_COPIED)
            if self.frontend in ready:
                if self.curve is None:
                    self._drain(self.frontend, core.on_frontend, _FRONTEND_COPIED)
                else:
                    self._drain_with_roles(self.frontend, core.on_frontend)
            if self.job_sockets.sink in ready:
                self._drain(self.job_sockets.sink, lambda frames, _: self.jobs.on_event(frames),
                            3)
            self.jobs.flush()  # commit job writes, then send what waited for them

    def _drain(self, sock: zmq.Socket, handle: Callable[[list, float], None],
               copied: int) -> None:
        for _ in range(_DRAIN_PER_WAKE):
            try:
                frames = recv_message(sock, copied)
            except zmq.Again:
                return
            handle(frames, self.clock())

    def _drain_with_roles(self, sock: zmq.Socket,
                          handle: Callable[[list, float, str], None]) -> None:
        """``_drain`` for the frontend with CURVE on: each message with its key's role."""
        for _ in range(_DRAIN_PER_WAKE):
            try:
                frames, role = recv_message_of(sock, _FRONTEND_COPIED)
            except zmq.Again:
                return
            handle(frames, self.clock(), role)

    def close(self) -> None:
        self.jobs.close()
        self.job_sockets.close()
        self.frontend.close(0)
        self.backend.close(0)
        if self.authenticator is not None:
            self.authenticator.stop()


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_MMAP_THRESHOLD = 1 << 20


def _give_large_blocks_back() -> None:
    """Make glibc serve blocks of 1 MiB and more (job inputs and results) with mmap, so that
    freeing one gives it back to the system: by default glibc raises its mmap threshold after
    such a free (up to 32 MiB), after which a 30 MB result stays in the heap (RSS +32 MB)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    if hasattr(libc, "mallopt"):
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def assemble(parts: Container) -> BrokerDaemon:
    """The broker built from ``parts``: its sections, keys, ZeroMQ context and clocks.
    Raises CurveError when the CURVE settings do not name usable keys, StoreUnusable when
    the job store cannot be opened and written."""
    broker = parts.broker.get()
    heartbeat = parts.heartbeat.get()
    return BrokerDaemon(
        broker, config_from(broker, heartbeat, parts.request.get(), parts.batching.get(),
                            parts.settings.get().cluster),
        jobs_config_from(parts.jobs.get(), heartbeat, broker.frontend),
        curve.from_settings(parts.curve.get(), "broker"), parts.zmq_context.get(),
        parts.clock.get(), parts.wall_clock.get())


def run(parts: Container) -> int:
    """Run the broker until SIGINT or SIGTERM; return the exit code.

    The composition root: every section and part the broker uses comes from ``parts``."""
    _give_large_blocks_back()
    try:
        tracing = start_tracing(parts.settings.get().tracing, "broker")
        daemon = assemble(parts)
    except (curve.CurveError, StoreUnusable, TracingError) as exc:
        log.error("broker: %s", exc)
        return 1
    if tracing is not None:
        tracing.wall_offset = daemon.core.wall_offset
        daemon.core.tracing = tracing
    broker = daemon.settings
    try:
        front, back = daemon.bind()
    except zmq.ZMQError as exc:
        log.error("broker: cannot bind the frontend %s and the backend %s: %s (is another "
                  "broker on these ports?)", broker.frontend, broker.backend, exc)
        return 1
    signal.signal(signal.SIGTERM, daemon.stop)
    signal.signal(signal.SIGINT, daemon.stop)
    log.info("broker %s of cluster '%s': frontend (gateways) on %s, backend (workers) on %s",
             daemon.core.broker_id, daemon.core.admission.name, front, back)
    exposed = [e for e in (front, back) if curve.reachable_from_other_hosts(e)]
    if exposed and daemon.curve is None:
        log.warning("broker: CURVE is off and the broker takes peers from other hosts on %s: "
                    "anyone who reaches it can join or call the cluster; set curve.enabled "
                    "where the network is shared (docs/security.md)", " and ".join(exposed))
    if broker.metrics_port:
        metrics = BrokerMetrics()
        if metrics.serve(broker.metrics_host, broker.metrics_port):
            daemon.metrics = metrics
            daemon.core.worker_metrics = metrics.workers.accept
    try:
        daemon.serve_forever()
    finally:
        daemon.close()
        if tracing is not None:
            tracing.shutdown()  # exports the spans still buffered
        log.info("broker %s: stopped", daemon.core.broker_id)
    return 0
