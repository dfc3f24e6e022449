"""``with_last`` (gateway.oip_stream): each chunk with whether its end is known as it goes out,
never holding a chunk back for the next. No sockets, no sleeps: the end is ready, or waits on
an event the test sets."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import pytest

from gateway.oip_stream import with_last


async def _items(n: int, gate: asyncio.Event | None = None, fail: bool = False
                 ) -> AsyncGenerator[int, None]:
    for i in range(n):
        yield i
    if gate is not None:
        await gate.wait()  # the end is not ready when the last item goes out
    if fail:
        raise ValueError("failed after the items")


def test_the_last_item_is_marked_when_the_end_is_ready() -> None:
    async def run() -> list:
        return [x async for x in with_last(_items(3))]
    assert asyncio.run(run()) == [(0, False), (1, False), (2, True)]


def test_an_end_that_is_not_ready_leaves_the_last_item_unmarked() -> None:
    async def run() -> list:
        gate = asyncio.Event()
        got = []
        async for item, last in with_last(_items(2, gate)):
            got.append((item, last))
            if item == 1:
                gate.set()  # the end comes only after the last item went out
        return got
    assert asyncio.run(run()) == [(0, False), (1, False)]


def test_without_look_ahead_nothing_is_marked() -> None:
    async def run() -> list:
        return [x async for x in with_last(_items(2), look_ahead=False)]
    assert asyncio.run(run()) == [(0, False), (1, False)]
    assert asyncio.run(_collect_empty()) == []


async def _collect_empty() -> list:
    return [x async for x in with_last(_items(0))]


def test_an_error_after_the_items_comes_after_them_unmarked() -> None:
    async def run() -> list:
        got = []
        with pytest.raises(ValueError, match="after the items"):
            async for x in with_last(_items(2, fail=True)):
                got.append(x)
        return got
    assert asyncio.run(run()) == [(0, False), (1, False)]


async def _waiting(gate: asyncio.Event) -> AsyncGenerator[int, None]:
    yield 0
    await gate.wait()  # never set: the next item is awaited when the consumer leaves
    yield 1


def test_closing_early_lets_the_owner_close_its_items() -> None:
    async def run() -> bool:
        items = _waiting(asyncio.Event())
        closed = False
        async with contextlib.aclosing(items):
            async with contextlib.aclosing(with_last(items)) as marked:
                async for _ in marked:
                    break  # the look-ahead for item 1 is in flight
            closed = True
        return closed  # aclose of ``items`` did not find it running
    assert asyncio.run(run())
