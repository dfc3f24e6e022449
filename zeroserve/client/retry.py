"""When to try a call again: jittered exponential backoff that never outlives the deadline (pure).

Only overload (HTTP 503, gRPC UNAVAILABLE, no gateway answering) is retried: the
call did not run, so running it again is safe.
"""
from __future__ import annotations

from collections.abc import Callable

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
