"""Retry rules of the client: jittered backoff within the deadline, overload only."""
from __future__ import annotations

from typing import Any

import pytest

import zeroserve
from zeroserve.client.retry import MAX_DELAY_S, retry_delay


def test_delays_grow_with_jitter_and_stop_before_the_deadline() -> None:
    assert retry_delay(0, 10.0, lambda: 0.0) == pytest.approx(0.025)
    assert retry_delay(0, 10.0, lambda: 1.0) == pytest.approx(0.05)
    assert retry_delay(3, 10.0, lambda: 1.0) == pytest.approx(0.4)
    assert retry_delay(30, 10.0, lambda: 1.0) == MAX_DELAY_S
    assert retry_delay(3, 0.3, lambda: 1.0) is None  # would leave no time for the call
    assert retry_delay(0, 10.0, lambda: 0.0, floor_s=1.0) == 1.0


class FlakyTransport:
    """Refuses ``refusals`` calls for overload, then answers; records the time left."""

    def __init__(self, refusals: int, error: Exception | None = None) -> None:
        self.refusals = refusals
        self.error = error or zeroserve.Overloaded(503, "queue full")
        self.calls: list[float] = []

    def call(self, service: str, endpoint: str, inputs: Any, timeout_s: float) -> Any:
        self.calls.append(timeout_s)
        if len(self.calls) <= self.refusals:
            raise self.error
        return "ok"

    def close(self) -> None:
        pass


def _client(transport: FlakyTransport, timeout: float = 5.0, retry: bool = True
            ) -> tuple[zeroserve.Client, list[float]]:
    now = [0.0]
    client = zeroserve.Client("http://unused:1", timeout=timeout, retry=retry,
                              transport=transport)  # type: ignore[arg-type]
    client._clock = lambda: now[0]
    client._sleep = lambda s: now.__setitem__(0, now[0] + s)
    return client, now


def test_overload_is_retried_until_it_gets_through() -> None:
    transport = FlakyTransport(refusals=3)
    client, now = _client(transport)
    assert client.call("s", "e") == "ok"
    assert len(transport.calls) == 4
    assert transport.calls == sorted(transport.calls, reverse=True)  # less time left each try
    assert 0 < now[0] < 1.0


def test_retries_give_up_at_the_deadline() -> None:
    transport = FlakyTransport(refusals=10**6)
    client, now = _client(transport, timeout=2.0)
    with pytest.raises(zeroserve.Overloaded):
        client.call("s", "e")
    assert now[0] <= 2.0 and len(transport.calls) > 3


@pytest.mark.parametrize("error", [zeroserve.BadRequest(400, "no"),
                                   zeroserve.ServerError(500, "no"),
                                   zeroserve.NotFound(404, "no")])
def test_other_errors_are_not_retried(error: Exception) -> None:
    transport = FlakyTransport(refusals=1, error=error)
    client, _ = _client(transport)
    with pytest.raises(type(error)):
        client.call("s", "e")
    assert len(transport.calls) == 1


def test_retry_off_raises_at_once() -> None:
    transport = FlakyTransport(refusals=1)
    client, _ = _client(transport, retry=False)
    with pytest.raises(zeroserve.Overloaded):
        client.call("s", "e")
    assert len(transport.calls) == 1
