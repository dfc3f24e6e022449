"""The process of one job slot: loads the service again and runs one job at a time.

A child of the worker (multiprocessing, spawn), so that a CPU-heavy task never
holds the GIL of the worker's real-time loop. It talks to its parent over a
pipe in msgpack maps (never pickle): it receives ``{job_id, attempt, task,
inputs}`` and answers ``started``, ``progress``, then ``succeeded`` (with the
result as a codec payload, every array inline) or ``failed`` (also for a result over
``max_result_bytes``, which is never sent). The parent sets
``cancel`` to make ``ctx.cancelled`` true. The inputs of a job submitted while the gateway
traced carry the submission's trace context (for the lane's span): it is taken out first.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

from zeroserve.process import signal_on_parent_death
from zeroserve.service import ServiceSpec, load_service
from zeroserve.task import JobContext
from zeroserve.tracing import TRACEPARENT_KEY, take_carried
from zeroserve.wire import codec
from zeroserve.wire.envelope import pack_map, unpack_map

_PROGRESS_EVERY_S = 0.1  # progress reports closer together than this are merged


PRIORITIES = ("idle", "low", "normal")  # worker.job_priority


def lower_priority(priority: str) -> None:
    """Give this process the CPU priority ``priority``: ``idle`` is Linux's SCHED_IDLE (it runs
    only on CPU time that no other process wants; nice 19 where there is no SCHED_IDLE),
    ``low`` is nice 10, ``normal`` changes nothing."""
    if priority == "idle" and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif priority in ("idle", "low"):
        os.nice(19 if priority == "idle" else 10)


def child_main(target: str, conn: Connection, cancel: Any, priority: str = "normal",
               max_result_bytes: int | None = None) -> None:
    """Entry point of the child: take the CPU ``priority`` of jobs, load ``target``, then run
    jobs from ``conn`` until EOF, failing those whose encoded result is over
    ``max_result_bytes`` (None: no limit)."""
    signal_on_parent_death(signal.SIGKILL)
    lower_priority(priority)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when its slots stop
    try:
        spec = load_service(target)
        instance = spec.cls()
    except Exception as exc:  # the parent logs it and retries later
        conn.send_bytes(pack_map({"kind": "broken", "error": f"{type(exc).__name__}: {exc}"}))
        return
    conn.send_bytes(pack_map({"kind": "ready"}))
    while True:
        try:
            message = unpack_map(conn.recv_bytes(), "job")
        except (EOFError, OSError):
            return
        run_job(spec, instance, message, conn.send_bytes, cancel.is_set, max_result_bytes)


def run_job(spec: ServiceSpec, instance: Any, message: dict, send: Any,
            is_cancelled: Any, max_result_bytes: int | None = None) -> None:
    """Run one job message; report through ``send(bytes)``; never raises for the task's error.
    A result over ``max_result_bytes`` encoded is reported as a failure, and not sent."""
    job_id, attempt = message["job_id"], message["attempt"]

    def say(kind: str, **fields: Any) -> None:
        send(pack_map({"kind": kind, "job_id": job_id, "attempt": attempt, **fields}))

    task = spec.tasks.get(message["task"])
    if task is None:
        return say("failed", error=f"service '{spec.name}' has no task '{message['task']}'")
    say("started")
    last = [0.0]

    def report(fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] >= _PROGRESS_EVERY_S or fraction >= 1.0:
            last[0] = now
            say("progress", progress=fraction)

    try:
        inputs = codec.decode(message["inputs"])
        if not isinstance(inputs, dict):
            raise codec.CodecError("inputs must be a map of names to values")
        if TRACEPARENT_KEY in inputs:  # the submission's, for the lane's span: not an input
            take_carried(inputs)
        if task.context_arg:
            inputs[task.context_arg] = JobContext(job_id, attempt, report, is_cancelled)
        method = getattr(instance, task.method)
        value = asyncio.run(method(**inputs)) if task.is_async else method(**inputs)
        result, _ = codec.encode(value, threshold=1 << 62)
    except Exception as exc:  # the user's task (or its inputs/result): report, keep serving
        return say("failed", error=f"{type(exc).__name__}: {exc}")
    if max_result_bytes is not None and len(result) > max_result_bytes:
        return say("failed", error=f"the task's result is {len(result)} bytes encoded, more "
                                   f"than jobs.max_result_bytes ({max_result_bytes})")
    say("succeeded", result=result)
