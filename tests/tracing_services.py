"""Services for tests/integration/test_tracing.py: endpoints that add their own spans with the
OpenTelemetry API, a batchable one, streams, a service that calls another, and tasks."""
import asyncio
import time
from typing import Annotated

import numpy as np
from opentelemetry import trace

import zeroserve

Rows = Annotated[np.ndarray, zeroserve.Tensor("float32", (-1, 2))]


@zeroserve.service(name="traced")
class Traced:
    @zeroserve.api
    def greet(self, name: str) -> str:
        with trace.get_tracer("tests").start_as_current_span("user greet"):
            return f"hello {name}"

    @zeroserve.api
    async def agreet(self, name: str) -> str:
        with trace.get_tracer("tests").start_as_current_span("user agreet"):
            await asyncio.sleep(0)
            return f"hello {name}"

    @zeroserve.api
    def fail(self, why: str) -> str:
        raise ValueError(why)

    @zeroserve.api
    def count(self, n: int):
        yield from range(n)

    @zeroserve.api(batchable=True, max_batch_size=16, max_latency_ms=100)
    def size(self, x: Rows) -> Rows:
        time.sleep(0.05)  # the others queue meanwhile, and go together next
        return np.full_like(x, x.shape[0])

    @zeroserve.api
    def spell(self, word: str):
        for letter in word:
            with trace.get_tracer("tests").start_as_current_span("user spell"):
                yield letter

    @zeroserve.api
    async def aspell(self, word: str):
        for letter in word:
            with trace.get_tracer("tests").start_as_current_span("user aspell"):
                await asyncio.sleep(0)
                yield letter

    @zeroserve.api
    def broken(self, after: int):
        yield from range(after)
        raise RuntimeError("broken stream")


@zeroserve.service(name="relay")
class Relay:
    traced = zeroserve.depends(Traced)

    @zeroserve.api
    async def relay(self, name: str) -> str:
        return await self.traced.call("greet", name=name)

    @zeroserve.api
    def relay_sync(self, name: str) -> str:
        with trace.get_tracer("tests").start_as_current_span("user relay"):
            return self.traced.call_sync("greet", name=name)

    @zeroserve.api
    async def relay_stream(self, name: str):
        yield await self.traced.call("greet", name=name)

    @zeroserve.api
    def relay_stream_sync(self, name: str):
        yield self.traced.call_sync("greet", name=name)


@zeroserve.service(name="tracedjobs")
class TracedJobs:
    @zeroserve.task(timeout_s=30, max_attempts=1)
    def tally(self, n: int) -> int:
        return sum(range(n))

    @zeroserve.task(timeout_s=30, max_attempts=1)
    def refuse(self, why: str) -> int:
        raise ValueError(why)
