"""Retry rules of the client: jittered backoff within the deadline, overload only."""
from __future__ import annotations

from typing import Any

import pytest

import zeroserve
from zeroserve.client.retry import MAX_DELAY_S, CallRetries, GiveUp, Send, Wait, retry_delay
from zeroserve.client.transport import Operation


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

    def send(self, operation: Operation, timeout_s: float) -> Any:
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
                              transport=transport, clock=lambda: now[0],
                              sleep=lambda s: now.__setitem__(0, now[0] + s))
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


def test_the_rule_sends_with_the_time_left_and_waits_at_least_the_retry_after() -> None:
    now = [10.0]
    rule = CallRetries(5.0, lambda: now[0], random=lambda: 0.0)
    assert rule.next() == Send(5.0)
    refused = zeroserve.Overloaded(503, "queue full")
    refused.retry_after_s = 1.0
    now[0] += 0.5
    assert rule.refused(refused) == Wait(1.0)  # not 25 ms: the server asked for 1 s
    now[0] += 1.0
    assert rule.next() == Send(pytest.approx(3.5))
    now[0] += 3.0
    assert rule.refused(refused) == GiveUp(refused)  # 1 s would not fit in the 0.5 s left


def test_a_retry_after_past_the_deadline_gives_up_at_once() -> None:
    transport = FlakyTransport(refusals=10**6)
    transport.error.retry_after_s = 5.0  # type: ignore[attr-defined]
    client, now = _client(transport, timeout=2.0)
    with pytest.raises(zeroserve.Overloaded):
        client.call("s", "e")
    assert len(transport.calls) == 1 and now[0] == 0.0


def test_the_rule_gives_up_when_the_deadline_passed_while_waiting() -> None:
    now = [0.0]
    rule = CallRetries(1.0, lambda: now[0], random=lambda: 1.0)
    rule.next()
    wait = rule.refused(zeroserve.Unreachable(503, "refused"))
    assert isinstance(wait, Wait)
    now[0] += 2.0  # the sleep overshot
    step = rule.next()
    assert isinstance(step, GiveUp) and isinstance(step.error, zeroserve.DeadlineExceeded)
    assert "while retrying" in str(step.error)


def test_no_answer_is_given_up_with_the_clients_own_deadline_error() -> None:
    now = [0.0]
    rule = CallRetries(2.0, lambda: now[0])
    rule.next()
    now[0] += 2.0
    error = rule.timed_out().error
    assert isinstance(error, zeroserve.DeadlineExceeded) and not error.from_server
    assert "in 2.0 s" in str(error)
