"""When to try a call again: jittered exponential backoff that never outlives the deadline (pure).

Overload (HTTP 503, gRPC UNAVAILABLE, no gateway answering) is retried: the call did
not run, so running it again is safe. A call whose connection broke once it was sent
may have run: it is sent again only when its endpoint allows running twice
(:mod:`zeroserve.client.resend`). A call that got no answer in time is never sent again.

:class:`CallRetries` is the rule of one call, on an injected clock; the sync and async
clients only carry out its steps (:class:`Send`, :class:`Wait`, :class:`GiveUp`).
"""
from __future__ import annotations

import random as random_module
from collections.abc import Callable
from dataclasses import dataclass

from zeroserve.client.errors import CallInterrupted, Overloaded, no_answer, passed_while_retrying

FIRST_DELAY_S = 0.05
MAX_DELAY_S = 2.0


def retry_delay(attempt: int, remaining_s: float, random: Callable[[], float],
                floor_s: float = 0.0) -> float | None:
    """Seconds to wait before attempt ``attempt + 1`` (0-based ``attempt`` just failed), or None
    to give up: the wait would leave no time for the call before the deadline.

    The wait is drawn uniformly from [cap/2, cap], cap = 50 ms · 2^attempt up to 2 s
    ("equal jitter": spread out, yet never a burst at once), and at least ``floor_s``
    (a server's Retry-After, for instance).
    """
    cap = min(MAX_DELAY_S, FIRST_DELAY_S * (2 ** attempt))
    delay = max(floor_s, cap / 2 + random() * cap / 2)
    if delay >= remaining_s * 0.9:
        return None
    return delay


@dataclass(frozen=True)
class Send:
    """Send the call (again), with ``timeout_s`` seconds left before its deadline."""

    timeout_s: float


@dataclass(frozen=True)
class Wait:
    """Wait ``seconds``, then ask the rule for the next step."""

    seconds: float


@dataclass(frozen=True)
class GiveUp:
    """Raise ``error``."""

    error: Exception


class CallRetries:
    """The retry rule of one call of deadline ``budget_s`` (seconds from now on ``clock``).

    Ask :meth:`next` for a step; after a :class:`Send`, report what came back with
    :meth:`refused` (an overload answer) or :meth:`timed_out` (no answer in time).
    With ``retry`` False an overload is given up at once.
    """

    def __init__(self, budget_s: float, clock: Callable[[], float], *, retry: bool = True,
                 random: Callable[[], float] = random_module.random) -> None:
        self.budget_s = budget_s
        self.clock = clock
        self.retry = retry
        self.random = random
        self.deadline = clock() + budget_s
        self.tries = 0
        self.last: Overloaded | None = None  # the overload answer being retried
        self.sent_at = self.deadline

    def next(self) -> Send | GiveUp:
        """Send with the time left, or give up: the deadline passed while waiting to retry."""
        now = self.clock()
        if now >= self.deadline:
            return GiveUp(passed_while_retrying(self.last))
        self.sent_at = now
        return Send(self.deadline - now)

    def refused(self, error: Overloaded) -> Wait | GiveUp:
        """The call was refused for overload: wait (at least its Retry-After), or give up with
        ``error`` when the wait would not leave time for another try."""
        delay = retry_delay(self.tries, self.deadline - self.clock(), self.random,
                            error.retry_after_s or 0.0) if self.retry else None
        if delay is None:
            return GiveUp(error)
        self.tries, self.last = self.tries + 1, error
        return Wait(delay)

    def interrupted(self, error: CallInterrupted, resend: bool) -> Wait | GiveUp:
        """The connection broke once the call was sent, so it may have run: wait and send it
        again when ``resend`` (its endpoint allows running twice), else give up with ``error``."""
        delay = retry_delay(self.tries, self.deadline - self.clock(), self.random) \
            if resend and self.retry else None
        if delay is None:
            return GiveUp(error)
        self.tries += 1
        return Wait(delay)

    def time_left(self) -> float:
        """Seconds until the call's deadline (never negative)."""
        return max(0.0, self.deadline - self.clock())

    def timed_out(self) -> GiveUp:
        """No answer came in the time left: the client's own deadline error (not retried,
        the call may be running)."""
        return GiveUp(no_answer(self.clock() - self.sent_at, self.budget_s))
