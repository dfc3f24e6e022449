"""Client.stream and AsyncClient.stream over a scripted transport (fake clock): overload
before the first chunk is retried, a missing first chunk is the client's own deadline, a late
next chunk its idle error, an error after chunks comes after them, and leaving early closes
the transport's stream."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator
from typing import Any

import pytest

import zeroserve


class ScriptedStreams:
    """Each stream replays the next script: values to yield, exceptions to raise."""

    def __init__(self, *scripts: list[Any]) -> None:
        self.scripts = list(scripts)
        self.sent: list[tuple[float, float | None]] = []  # (timeout_s, idle_timeout_s)
        self.closed = 0

    def stream(self, service: str, endpoint: str, inputs: dict, timeout_s: float,
               idle_timeout_s: float | None) -> Generator[Any, None, None]:
        self.sent.append((timeout_s, idle_timeout_s))
        script = self.scripts.pop(0)
        try:
            for step in script:
                if isinstance(step, BaseException):
                    raise step
                yield step
        finally:
            self.closed += 1

    def close(self) -> None:
        pass


class AsyncScriptedStreams(ScriptedStreams):
    async def stream(self, service: str, endpoint: str, inputs: dict,  # type: ignore[override]
                     timeout_s: float, idle_timeout_s: float | None
                     ) -> AsyncGenerator[Any, None]:
        for value in super().stream(service, endpoint, inputs, timeout_s, idle_timeout_s):
            yield value

    async def close(self) -> None:  # type: ignore[override]
        pass


def _client(transport: ScriptedStreams, retry: bool = True) -> zeroserve.Client:
    now = [0.0]
    return zeroserve.Client("http://unused:1", timeout=5.0, retry=retry,
                            transport=transport, clock=lambda: now[0],
                            sleep=lambda s: now.__setitem__(0, now[0] + s))


def test_chunks_come_in_order_with_the_limits_given_to_the_transport() -> None:
    transport = ScriptedStreams([1, 2, 3])
    assert list(_client(transport).stream("s", "e", timeout=2.0, idle_timeout=0.5)) == [1, 2, 3]
    assert transport.sent == [(2.0, 0.5)] and transport.closed == 1


def test_nothing_is_sent_before_the_first_chunk_is_asked_for() -> None:
    transport = ScriptedStreams([1])
    chunks = _client(transport).stream("s", "e")
    assert transport.sent == []
    assert next(chunks) == 1 and len(transport.sent) == 1


def test_an_overload_before_the_first_chunk_is_retried() -> None:
    transport = ScriptedStreams([zeroserve.Overloaded(503, "full")], ["a"])
    assert list(_client(transport).stream("s", "e")) == ["a"]
    assert len(transport.sent) == 2 and transport.sent[1][0] < transport.sent[0][0]
    with pytest.raises(zeroserve.Overloaded):
        list(_client(ScriptedStreams([zeroserve.Overloaded(503, "full")]),
                     retry=False).stream("s", "e"))


def test_no_first_chunk_in_time_is_the_clients_deadline_and_never_sent_again() -> None:
    transport = ScriptedStreams([TimeoutError()], ["never"])
    with pytest.raises(zeroserve.DeadlineExceeded) as late:
        list(_client(transport).stream("s", "e"))
    assert not late.value.from_server and len(transport.sent) == 1


def test_a_late_next_chunk_is_the_clients_idle_error_after_the_chunks_before_it() -> None:
    got: list = []
    with pytest.raises(zeroserve.DeadlineExceeded, match="0.5 s") as late:
        got.extend(_client(ScriptedStreams([1, TimeoutError()])).stream("s", "e",
                                                                       idle_timeout=0.5))
    assert got == [1] and not late.value.from_server


def test_an_error_after_chunks_is_raised_after_them_and_not_retried() -> None:
    transport = ScriptedStreams([1, 2, zeroserve.ServerError(500, "boom")], ["again"])
    got: list = []
    with pytest.raises(zeroserve.ServerError, match="boom"):
        got.extend(_client(transport).stream("s", "e"))
    assert got == [1, 2] and len(transport.sent) == 1


def test_leaving_early_closes_the_transports_stream() -> None:
    transport = ScriptedStreams(list(range(100)))
    for value in _client(transport).stream("s", "e"):
        if value == 3:
            break
    assert transport.closed == 1


def test_an_empty_stream_yields_nothing() -> None:
    assert list(_client(ScriptedStreams([])).stream("s", "e")) == []


def test_bad_idle_timeout_is_refused_at_once() -> None:
    with pytest.raises(ValueError):
        _client(ScriptedStreams()).stream("s", "e", idle_timeout=0)


def test_async_stream_retries_overload_closes_early_and_raises_idle() -> None:
    async def main() -> None:
        transport = AsyncScriptedStreams([zeroserve.Overloaded(503, "full")],
                                         list(range(10)), [1, TimeoutError()])
        now = [0.0]

        async def sleep(s: float) -> None:
            now[0] += s

        async with zeroserve.AsyncClient("http://unused:1", transport=transport,
                                         clock=lambda: now[0], sleep=sleep) as client:
            stream = client.stream("s", "e", idle_timeout=0.5)
            assert [await anext(stream), await anext(stream)] == [0, 1]
            await stream.aclose()  # type: ignore[attr-defined]
            assert transport.closed == 2 and len(transport.sent) == 2
            with pytest.raises(zeroserve.DeadlineExceeded):
                async for _ in client.stream("s", "e", idle_timeout=0.5):
                    pass

    asyncio.run(main())
