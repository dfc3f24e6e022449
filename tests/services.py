"""Services used only by the integration tests."""
import asyncio
import os
import time
from typing import Annotated

import numpy as np

import zeroserve

Vec = Annotated[np.ndarray, zeroserve.Tensor("float32", (-1, 4))]


@zeroserve.service(name="probe")
class Probe:
    """Endpoints that misbehave on purpose, and one that says which worker ran it."""

    @zeroserve.api
    def whoami(self) -> dict:
        return {"pid": os.getpid()}

    @zeroserve.api
    def sleep(self, seconds: float) -> dict:
        time.sleep(seconds)
        return {"pid": os.getpid(), "slept": seconds}

    @zeroserve.api
    async def async_sleep(self, seconds: float) -> dict:
        await asyncio.sleep(seconds)
        return {"pid": os.getpid(), "slept": seconds}

    @zeroserve.api
    def fail(self, message: str) -> str:
        raise ValueError(message)

    @zeroserve.api
    def double(self, x: Vec) -> Vec:
        return x * 2

    @zeroserve.api
    def bad_output(self) -> dict:
        return {"not": object()}  # cannot be encoded


@zeroserve.service(name="batchy")
class Batchy:
    """A batchable endpoint that records the batch sizes it saw."""

    @zeroserve.api(batchable=True, max_batch_size=32, max_latency_ms=50)
    def tag(self, x: Vec) -> Vec:
        time.sleep(0.02)
        out = x.copy()
        out[:, 3] = x.shape[0]  # each row learns the size of its batch
        return out

    @zeroserve.api(batchable=True, max_batch_size=32, max_latency_ms=50)
    def width(self, x: Annotated[np.ndarray, zeroserve.Tensor("float32", (-1, -1))]) -> dict:
        time.sleep(0.02)
        return {"rows": np.full(x.shape[0], x.shape[0]), "first": x[:, 0].copy()}

    @zeroserve.api(batchable=True, max_batch_size=8, max_latency_ms=20)
    def wrong_rows(self, x: Vec) -> Vec:
        return x[:1]


@zeroserve.service(name="ledger")
class Ledger:
    """Remembers which tags it executed, to prove what ran and what did not."""

    def __init__(self) -> None:
        self.tags: list[str] = []

    @zeroserve.api
    def mark(self, tag: str, seconds: float = 0.0) -> str:
        self.tags.append(tag)
        time.sleep(seconds)
        return tag

    @zeroserve.api(retry_on_worker_loss=False)
    def mark_once(self, tag: str, seconds: float = 0.0) -> str:
        """``mark`` for a call with a side effect: never run twice."""
        self.tags.append(tag)
        time.sleep(seconds)
        return tag

    @zeroserve.api
    def executed(self) -> list:
        return self.tags


@zeroserve.service(name="broken")
class Broken:
    """A service whose constructor fails, as when model weights are missing."""

    def __init__(self) -> None:
        raise FileNotFoundError("weights.bin")

    @zeroserve.api
    def run(self) -> int:
        return 0


def _job_log(line: str) -> None:
    """Append one line to the file named by ZS_TEST_JOB_LOG (executions, seen by the tests)."""
    path = os.environ.get("ZS_TEST_JOB_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


@zeroserve.service(name="chores")
class Chores:
    """Tasks for the job tests, and one real-time endpoint beside them."""

    @zeroserve.api
    def ping(self) -> str:
        return "pong"

    @zeroserve.task(timeout_s=30, max_attempts=3)
    def mark(self, tag: str, ctx: zeroserve.JobContext, seconds: float = 0.0) -> dict:
        steps = max(int(seconds / 0.01), 1)
        for i in range(steps):
            time.sleep(seconds / steps)
            ctx.progress((i + 1) / steps)
        _job_log(f"done {tag} {ctx.job_id} {ctx.attempt} {os.getpid()}")
        return {"tag": tag, "pid": os.getpid()}

    @zeroserve.task(timeout_s=30, max_attempts=2)
    def always_fails(self, message: str) -> str:
        raise RuntimeError(message)

    @zeroserve.task(timeout_s=60)
    def until_cancelled(self, tag: str, seconds: float, ctx: zeroserve.JobContext) -> dict:
        _job_log(f"start {tag}")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if ctx.cancelled:
                _job_log(f"saw-cancel {tag}")
                return {"cancelled": True}
            time.sleep(0.02)
        _job_log(f"done {tag}")
        return {"cancelled": False}

    @zeroserve.task(timeout_s=1, max_attempts=1)
    def too_slow(self) -> int:
        time.sleep(30)
        return 0

    @zeroserve.task
    def double(self, x: Vec) -> Vec:
        return x * 2


def _job_log_count(prefix: str) -> int:
    """How many lines of the ZS_TEST_JOB_LOG file start with ``prefix`` (0 without a file)."""
    path = os.environ.get("ZS_TEST_JOB_LOG")
    if not path or not os.path.exists(path):
        return 0
    with open(path) as log:
        return sum(1 for line in log if line.startswith(prefix))


@zeroserve.service(name="errands")
class Errands:
    """A second service with tasks (jobs listed by service); ``flaky`` fails a set number of
    times."""

    @zeroserve.task
    def fetch(self, tag: str) -> str:
        return tag

    @zeroserve.task(timeout_s=30, max_attempts=2)
    def flaky(self, tag: str, failures: int, ctx: zeroserve.JobContext) -> dict:
        """Raise on the first ``failures`` executions for ``tag`` (counted across attempts
        and retries in the job log as ``try TAG ATTEMPT``), then return."""
        tries = _job_log_count(f"try {tag} ")
        _job_log(f"try {tag} {ctx.attempt}")
        if tries < failures:
            raise RuntimeError(f"{tag}: failure {tries + 1} of {failures}")
        return {"tag": tag, "tries": tries + 1}


@zeroserve.service(name="ratios")
class Ratios:
    """Answers that may hold infinity or NaN (1/0, 0/0), and a count of what ran, to prove
    that a refused request never reached the model."""

    def __init__(self) -> None:
        self.runs = 0

    @zeroserve.api
    def reciprocal(self, x: Vec) -> Vec:
        self.runs += 1
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.float32(1) / x).astype(np.float32)

    @zeroserve.api
    def runs_so_far(self) -> int:
        return self.runs


def _mark(path: str, text: str) -> None:
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


@zeroserve.service(name="streamer")
class Streamer:
    """Generator endpoints for the streaming tests. ``marker`` paths record what the
    generator did (``started``, ``closed``) so that a test sees the worker's side."""

    @zeroserve.api
    def count(self, n: int, delay_s: float = 0.0, marker: str = ""):
        _mark(marker, "started")
        try:
            for i in range(n):
                if delay_s:
                    time.sleep(delay_s)
                yield i
        finally:
            _mark(marker, "closed")

    @zeroserve.api
    async def acount(self, n: int, delay_s: float = 0.0, marker: str = ""):
        _mark(marker, "started")
        try:
            for i in range(n):
                if delay_s:
                    await asyncio.sleep(delay_s)
                yield {"i": i, "text": f"token{i}"}
        finally:
            _mark(marker, "closed")

    @zeroserve.api
    async def blobs(self, n: int, size: int = 16384):
        for _ in range(n):
            yield "x" * size

    @zeroserve.api
    async def first_then_wait(self, gate: str, wait_s: float = 10.0):
        """Yields "first", then waits (up to ``wait_s``) for the file ``gate`` to exist
        before yielding "second": a client that sees "first" before creating the gate
        proves chunks are not collected and replayed."""
        yield "first"
        deadline = time.monotonic() + wait_s
        while not os.path.exists(gate) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        yield "second"

    @zeroserve.api
    def fails_after(self, n: int):
        yield from range(n)
        raise ValueError(f"failed after {n} chunks")

    @zeroserve.api
    def fails_first(self, why: str = "bad start"):
        raise ValueError(why)
        yield  # a generator that raises before its first chunk

    @zeroserve.api
    def bad_chunk(self):
        yield 1
        yield object()

    @zeroserve.api
    def arrays(self, n: int, size: int = 4, dtype: str = "float32"):
        for i in range(n):
            yield np.full(size, i, dtype=dtype)

    @zeroserve.api
    def exits_after(self, n: int):
        """Yields ``n`` chunks, then the worker process dies (a worker lost mid-stream)."""
        yield from range(n)
        time.sleep(0.05)
        os._exit(3)

    @zeroserve.api
    def ping(self) -> str:
        return "pong"
