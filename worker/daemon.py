"""The worker's socket loop: registers with the broker, runs batches, heartbeats, drains."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import zmq

from worker.dependencies import DependencyLink, ServiceHandle
from worker.job_lane import JobLane, lane_host
from worker.runner import BatchRunner, run_blocking_in
from worker.streams import StreamRun
from zeroserve import curve, metrics
from zeroserve.config import HeartbeatSettings, StreamSettings, WorkerSettings
from zeroserve.container import Container
from zeroserve.liveness import Liveness
from zeroserve.loopsocket import LoopSocket
from zeroserve.service import EndpointSpec, ServiceSpec
from zeroserve.sockets import open_socket
from zeroserve.tracing import TracingError, start_tracing
from zeroserve.wire import shm_refs
from zeroserve.wire.backend import (
    Batch,
    Ready,
    disconnect,
    heartbeat,
    parse_batch,
    parse_disconnect,
    waiting,
)
from zeroserve.wire.envelope import Command, ProtocolError, split_command
from zeroserve.wire.stream import batch_id_of, parse_cancel, parse_credit

if TYPE_CHECKING:
    from zeroserve.tracing.spans import WorkerTracer

log = logging.getLogger("zeroserve.worker")


class WorkerDaemon:
    """One connection to the broker at a time; reconnects with backoff when it goes silent.

    ``clock`` (seconds, monotonic) times the broker's liveness, every request's deadline
    (``BatchRunner``) and the job lane's timers. ``cluster`` (``cluster.name``) goes in
    READY: a broker of another cluster refuses the worker, which then tries again with
    backoff (the right broker may come up at that address later).
    """

    def __init__(self, spec: ServiceSpec, worker: WorkerSettings, heartbeat: HeartbeatSettings,
                 keys: curve.Curve | None, context: zmq.Context,
                 clock: Callable[[], float] = time.monotonic,
                 max_result_bytes: int | None = None, cluster: str = "default",
                 stream: StreamSettings | None = None) -> None:
        self._clock = clock
        self.stream_settings = stream or StreamSettings()
        self._streams: dict[int, StreamRun] = {}  # batch id -> the stream it runs
        self.cluster = cluster
        self.spec = spec
        self.broker = worker.backend
        self.slots = worker.slots
        self.heartbeat_s = heartbeat.interval_s
        self.liveness_s = heartbeat.liveness_s
        self.reconnect_min = worker.reconnect_min_s
        self.reconnect_max = worker.reconnect_max_s
        self.drain_timeout = worker.drain_timeout_s
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"
        self.context = context
        self.curve = keys
        self.sock: LoopSocket | None = None
        self.threads = worker.threads
        # a sync endpoint waiting in call_sync holds its thread: room for every batch it may
        # hold (twice its slots while batches wait on dependencies) besides the model's threads
        pool_size = self.threads + (2 * self.slots if spec.dependencies else 0)
        self.pool = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="endpoint")
        self.dependencies = DependencyLink(
            worker.frontend, context, keys, self._batch_waiting, cluster, clock, spec.name
        ) if spec.dependencies else None
        self.runner: BatchRunner | None = None
        self.job_slots = worker.job_slots if spec.tasks else 0
        self.jobs_host = worker.job_host or lane_host(self.broker)
        self.job_priority = worker.job_priority
        self.shm_reader = shm_refs.local_reader(worker.shm_key_prefix)  # inputs read in place
        self.max_result_bytes = max_result_bytes
        self.jobs: JobLane | None = None  # the job lane (docs/jobs.md), if the service has tasks
        self._in_flight: dict[asyncio.Task, int] = {}  # -> its batch id
        self._broker_liveness = Liveness(self.liveness_s)
        self._draining = False
        self._acknowledged = False
        self._drained = asyncio.Event()
        self._reconnect = asyncio.Event()
        self._refusal = ""  # the broker's refusal of this session's READY ("" if none)
        self._logged_refusal = ""
        self._metrics_owed = True  # a (new) broker has none of our metrics: send them all
        self.tracing: WorkerTracer | None = None  # spans of the requests run; set when on

    def _ready(self) -> list:
        self._metrics_owed = True
        return Ready(self.worker_id, self.spec.name, self.spec.describe(), self.slots,
                       {"pid": os.getpid(), "host": socket.gethostname(),
                        "devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        **(self.shm_reader.info() if self.shm_reader is not None else {})},
                       self.jobs.describe() if self.jobs is not None else {},
                       self.cluster, self.spec.version,
                       frozenset(self._in_flight.values())).to_frames()

    def _connect(self) -> None:
        if self.sock is not None:
            self.sock.close()
        sock = open_socket(self.context, zmq.DEALER, curve=self.curve, linger=None)
        sock.connect(self.broker)
        self.sock = LoopSocket(sock, self._on_message, copied=5)  # BATCH up to its header
        self._broker_liveness.heard(self._clock())  # a new connection: a whole window

    def _send(self, frames: list) -> None:
        assert self.sock is not None
        self.sock.send(frames)

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            instance = self.spec.cls()
        except Exception as exc:  # the user's __init__: say what failed, exit non-zero
            log.error("worker %s: creating %s failed: %s: %s", self.worker_id,
                      self.spec.cls.__name__, type(exc).__name__, exc, exc_info=True)
            return 1
        self.instance = instance
        if self.dependencies is not None:
            self.dependencies.tracing = self.tracing
            self.dependencies.start()
            for attribute, name in self.spec.dependencies.items():
                setattr(instance, attribute, ServiceHandle(self.dependencies, name))
            asyncio.ensure_future(self._check_dependencies())
        self.runner = BatchRunner(self.spec, instance, run_blocking_in(loop, self.pool),
                                  self._clock, self.tracing)
        shm_refs.accept_references(self.shm_reader)
        if self.job_slots > 0:
            try:
                self.jobs = JobLane(self.spec, self.worker_id, self.job_slots, self.jobs_host,
                                    self.context, self.curve, self.job_priority,
                                    self.max_result_bytes, self._clock)
            except ValueError as exc:
                log.error("worker %s: %s", self.worker_id, exc)
                return 1
            self.jobs.tracing = self.tracing
            self.jobs.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.begin_drain)
        backoff = self.reconnect_min
        refused = ""
        while not self._drained.is_set():
            self._connect()
            self._send(self._ready())
            if not refused:  # a refused worker's retries are quiet: the refusal was logged
                log.info("worker %s: serving %s version %d (%s) from broker %s with %d slots, "
                         "%d threads", self.worker_id, self.spec.name, self.spec.version,
                         ", ".join(sorted(self.spec.endpoints)), self.broker, self.slots,
                         self.threads)
            heard = await self._session()
            if self._drained.is_set():
                break
            refused, self._refusal = self._refusal, ""
            backoff = self.reconnect_min if heard and not refused \
                else min(backoff * 2, self.reconnect_max)
            if not refused:
                log.warning("worker %s: broker silent for %.1fs, reconnecting in %.1fs",
                            self.worker_id, self.liveness_s, backoff)
            await asyncio.sleep(backoff)
        if self.jobs is not None:
            await self.jobs.close(self.drain_timeout)
        if self.dependencies is not None:
            self.dependencies.close()
        self.pool.shutdown(wait=True)
        if self.sock is not None:
            self.sock.close(1000)
        self.context.term()
        log.info("worker %s: stopped", self.worker_id)
        return 0

    async def _session(self) -> bool:
        """Serve one connection until the broker goes silent or draining ends.
        Returns whether the broker was heard from at all."""
        self._reconnect.clear()
        start = self._broker_liveness.last_heard
        tasks = [asyncio.create_task(self._heartbeat())]
        stop = asyncio.create_task(self._drained.wait())
        again = asyncio.create_task(self._reconnect.wait())
        await asyncio.wait([stop, again], return_when=asyncio.FIRST_COMPLETED)
        for t in (*tasks, stop, again):
            t.cancel()
        await asyncio.gather(*tasks, stop, again, return_exceptions=True)
        return self._broker_liveness.last_heard != start

    def _on_message(self, frames: list) -> None:
        self._broker_liveness.heard(self._clock())
        try:
            command, rest = split_command(frames)
            if command is Command.BATCH:
                batch = parse_batch(rest)
                assert self.runner is not None
                endpoint = self.spec.endpoints.get(batch.endpoint)
                if endpoint is not None and endpoint.streams:
                    return self._start_stream(batch, endpoint)
                if self.runner.can_run_inline(batch.endpoint):
                    self._send(self.runner.run_inline(batch).to_frames())
                    return
                task = asyncio.ensure_future(self._run(batch))
                self._in_flight[task] = batch.batch_id
                task.add_done_callback(self._done)
            elif command is Command.STREAM_CREDIT:
                credit = parse_credit(rest)
                stream = self._streams.get(batch_id_of(credit.key))
                if stream is not None:
                    stream.credit(credit.chunks, credit.nbytes)
            elif command is Command.STREAM_CANCEL:
                stream = self._streams.get(batch_id_of(parse_cancel(rest, backend=True).key))
                if stream is not None:
                    stream.cancel()
            elif command is Command.DISCONNECT:
                refusal = parse_disconnect(rest)
                if refusal:
                    self._refused(refusal)
                elif self._draining:
                    self._maybe_drained(acknowledged=True)
                else:
                    log.info("worker %s: broker does not know us, registering again",
                             self.worker_id)
                    self._send(self._ready())
        except ProtocolError as exc:
            log.warning("worker %s: dropped malformed message from broker (%s)",
                        self.worker_id, exc)

    def _refused(self, refusal: str) -> None:
        """The broker refused our READY (another cluster's broker): end this session; the
        serve loop tries again with backoff. Logged once per distinct refusal."""
        if refusal != self._logged_refusal:
            self._logged_refusal = refusal
            log.error("worker %s: broker %s refused it (%s; this worker is of cluster '%s'); "
                      "trying again with backoff", self.worker_id, self.broker, refusal,
                      self.cluster)
        self._refusal = refusal
        if self._draining:
            self._drained.set()
        self._reconnect.set()

    def _batch_waiting(self, batch_id: int, is_waiting: bool) -> None:
        if self.sock is not None:
            self._send(waiting(batch_id, is_waiting))

    async def _check_dependencies(self) -> None:
        """Warn, once at start, of each dependency that the broker does not serve (yet)."""
        assert self.dependencies is not None
        await asyncio.sleep(self.heartbeat_s)  # give the broker a moment to know its workers
        served = await self.dependencies.served()
        if self._draining:
            return
        if served is None:
            log.warning("worker %s: the broker's frontend %s does not answer: calls of %s "
                        "will fail", self.worker_id, self.dependencies.address,
                        ", ".join(sorted(set(self.spec.dependencies.values()))))
            return
        for name in sorted(set(self.spec.dependencies.values()) - served):
            log.warning("worker %s: dependency %r of service %s is not served by the cluster "
                        "(yet): its calls answer 503 until a worker of it registers",
                        self.worker_id, name, self.spec.name)

    def _start_stream(self, batch: Batch, endpoint: EndpointSpec) -> None:
        """Run the stream of a BATCH to a generator endpoint (the broker sends a stream's
        request as a batch of its own)."""
        stream = StreamRun(batch.batch_id, batch.items[0], endpoint, self.instance, self._send,
                           run_blocking_in(asyncio.get_running_loop(), self.pool),
                           self.stream_settings, self._clock, self.spec.name, self.tracing)
        self._streams[batch.batch_id] = stream
        task = asyncio.ensure_future(self._run_stream(stream))
        self._in_flight[task] = batch.batch_id
        task.add_done_callback(self._done)

    async def _run_stream(self, stream: StreamRun) -> None:
        try:
            result = await stream.run()
        finally:
            self._streams.pop(stream.batch_id, None)
        self._send(result.to_frames())

    async def _run(self, batch: Batch) -> None:
        assert self.runner is not None
        result = await self.runner.run(batch)
        self._send(result.to_frames())

    def _done(self, task: asyncio.Task) -> None:
        self._in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker %s: batch failed: %r", self.worker_id, task.exception())
        if self._draining:
            self._maybe_drained()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if self._broker_liveness.dead(self._clock()):
                if self._draining:
                    self._drained.set()  # no broker to drain to; in-flight work is lost anyway
                self._reconnect.set()
                return
            self._send(heartbeat(metrics.REGISTRY.snapshot_if_changed(self._metrics_owed)))
            self._metrics_owed = False

    def begin_drain(self) -> None:
        """Stop taking work: tell the broker, finish what we hold, then stop."""
        if self._draining:
            return
        self._draining = True
        if self.jobs is not None:
            self.jobs.drain()
        log.info("worker %s: draining %d in-flight batches", self.worker_id,
                 len(self._in_flight))
        asyncio.get_running_loop().call_later(self.drain_timeout, self._drained.set)
        self._send(disconnect())

    def _maybe_drained(self, acknowledged: bool = False) -> None:
        self._acknowledged = self._acknowledged or acknowledged
        if self._acknowledged and not self._in_flight:
            self._drained.set()


def run(spec: ServiceSpec, parts: Container) -> int:
    """Run a worker for ``spec`` until SIGTERM/SIGINT (drains first); return the exit code.

    The composition root: every section and part the worker uses comes from ``parts``."""
    try:
        tracing = start_tracing(parts.settings.get().tracing, "worker")
        daemon = WorkerDaemon(spec, parts.worker.get(), parts.heartbeat.get(),
                              curve.from_settings(parts.curve.get(), "client"),
                              parts.zmq_context.get(), parts.clock.get(),
                              parts.jobs.get().max_result_bytes,
                              parts.settings.get().cluster.name, parts.stream.get())
    except (curve.CurveError, TracingError) as exc:
        log.error("worker: %s", exc)
        return 1
    daemon.tracing = tracing
    try:
        return asyncio.run(daemon.serve())
    finally:
        if tracing is not None:
            tracing.shutdown()  # exports the spans still buffered
