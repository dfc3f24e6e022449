"""The worker's runner checks deadlines on its injected clock: an expired request is never
executed and is answered 504; the batch's execution time is measured on the same clock."""
import asyncio

import numpy as np

import zeroserve
from worker.runner import BatchRunner
from zeroserve.service import service_spec
from zeroserve.wire import codec
from zeroserve.wire.backend import Batch, BatchItem
from zeroserve.wire.envelope import Status


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def item(request_id: bytes, timeout_ms: int, x: int = 1) -> BatchItem:
    meta, frames = codec.encode({"x": np.array([x])})
    return BatchItem(request_id, timeout_ms, [meta, *frames])


def make_runner(clock: FakeClock, call_takes_s: float = 0.0):
    """A runner whose endpoint ``step`` records each call and moves the clock on by
    ``call_takes_s``; ``double`` is batchable."""
    calls: list[list[int]] = []

    @zeroserve.service(name="s")
    class S:
        @zeroserve.api
        def step(self, x: np.ndarray) -> np.ndarray:
            calls.append(x.tolist())
            clock.now += call_takes_s
            return x

        @zeroserve.api(batchable=True)
        def double(self, x: np.ndarray) -> np.ndarray:
            calls.append(x.tolist())
            clock.now += call_takes_s
            return x * 2

    async def threads(fn):
        return fn()

    return BatchRunner(service_spec(S), S(), threads, clock), calls


def statuses(result) -> dict:
    return {it.request_id: it.status for it in result.items}


def test_request_that_expires_while_an_earlier_one_runs_is_never_executed():
    clock = FakeClock()
    runner, calls = make_runner(clock, call_takes_s=0.2)
    batch = Batch(1, "step", [item(b"a", 1000, 1), item(b"b", 100, 2), item(b"c", 1000, 3)])
    result = asyncio.run(runner.run(batch))
    assert statuses(result) == {b"a": Status.OK, b"b": Status.DEADLINE_EXCEEDED,
                                b"c": Status.OK}
    assert calls == [[1], [3]]


def test_request_whose_deadline_is_reached_exactly_is_not_executed():
    clock = FakeClock(0.0)
    runner, calls = make_runner(clock, call_takes_s=0.125)
    batch = Batch(1, "step", [item(b"a", 1000, 1), item(b"b", 125, 2)])
    assert statuses(asyncio.run(runner.run(batch)))[b"b"] is Status.DEADLINE_EXCEEDED
    assert calls == [[1]]


def test_request_with_no_time_left_is_answered_504_without_a_call():
    clock = FakeClock()
    runner, calls = make_runner(clock)
    result = runner.run_inline(Batch(1, "step", [item(b"a", 0)]))
    assert statuses(result) == {b"a": Status.DEADLINE_EXCEEDED}
    assert calls == []


def test_requests_within_their_deadline_run_whatever_the_clock_reads():
    clock = FakeClock(now=5e9)
    runner, calls = make_runner(clock, call_takes_s=0.05)
    batch = Batch(1, "step", [item(b"a", 100, 1), item(b"b", 100, 2)])
    assert set(statuses(asyncio.run(runner.run(batch))).values()) == {Status.OK}
    assert calls == [[1], [2]]


def test_execution_time_is_measured_on_the_injected_clock():
    clock = FakeClock(0.0)
    runner, _ = make_runner(clock, call_takes_s=0.25)
    result = asyncio.run(runner.run(Batch(1, "double", [item(b"a", 1000, 1),
                                                          item(b"b", 1000, 2)])))
    assert statuses(result) == {b"a": Status.OK, b"b": Status.OK}
    assert result.exec_s == 0.25
