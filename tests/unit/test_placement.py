"""Sync endpoints move inline once proven fast, and back to threads for good when slow."""
import asyncio

import numpy as np

import zeroserve
from worker.placement import Placement
from worker.runner import BatchRunner
from zeroserve.service import service_spec
from zeroserve.wire import codec
from zeroserve.wire.backend import Batch, BatchItem
from zeroserve.wire.envelope import Status


def test_fast_endpoint_moves_inline_after_the_trial():
    place = Placement(trial_calls=5)
    for _ in range(4):
        place.observe(0.0001)
    assert not place.inline
    place.observe(0.0001)
    assert place.inline


def test_one_slow_trial_call_keeps_the_endpoint_in_threads():
    place = Placement(trial_calls=3)
    for seconds in (0.0001, 0.5, 0.0001, 0.0001):
        place.observe(seconds)
    assert not place.inline


def test_slow_inline_call_sends_the_endpoint_back_to_threads_for_good():
    place = Placement(trial_calls=1)
    place.observe(0.0001)
    assert place.inline
    place.observe(0.2)
    assert not place.inline
    for _ in range(100):
        place.observe(0.0001)
    assert not place.inline


@zeroserve.service(name="s")
class Doubler:
    @zeroserve.api
    def double(self, x: np.ndarray) -> np.ndarray:
        return x * 2


def _double_batch(batch_id: int, timeout_ms: int) -> Batch:
    meta, frames = codec.encode({"x": np.arange(3)})
    return Batch(batch_id, "double", [BatchItem(b"r", timeout_ms, [meta, *frames])])


def test_inline_runner_returns_the_same_result_as_the_async_path():
    async def threads(fn):
        return fn()

    runner = BatchRunner(service_spec(Doubler), Doubler(), threads)
    batch = _double_batch(1, 1000)
    assert not runner.can_run_inline("double")  # not proven fast yet
    via_loop = asyncio.run(runner.run(batch))
    inline = runner.run_inline(batch)
    for result in (via_loop, inline):
        item = result.items[0]
        assert item.status is Status.OK
        assert codec.decode(item.frames[0], item.frames[1:]).tolist() == [0, 2, 4]


def test_a_fast_endpoint_moves_inline_however_long_the_thread_hop_takes():
    """Under load a thread hop can take longer than ``inline_below_s``: the placement must
    judge the call by the time it ran, or a fast endpoint never leaves the threads."""
    hop_s = Placement.inline_below_s * 2

    async def slow_hop(fn):
        await asyncio.sleep(hop_s)
        return fn()

    runner = BatchRunner(service_spec(Doubler), Doubler(), slow_hop)

    async def calls() -> None:
        for i in range(Placement.trial_calls):
            await runner.run(_double_batch(i, 10_000))

    asyncio.run(calls())
    assert runner.can_run_inline("double")
