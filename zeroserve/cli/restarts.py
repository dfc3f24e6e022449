"""When a supervisor starts a crashed daemon again, and when it gives up.

A daemon that exits on its own is started again after a backoff that doubles
with each crash of that daemon, from ``min_backoff_s`` up to ``max_backoff_s``.
When ``max_crashes`` of its crashes fall within ``window_s`` the supervisor
gives up: something is wrong that restarting will not mend (a service that
cannot load, a port that is taken). Pure: the caller passes the time.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class RestartPolicy:
    """The restart rule of one supervisor, for every daemon it runs (by name)."""

    min_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    max_crashes: int = 5
    window_s: float = 60.0
    _crashes: dict[str, deque[float]] = field(default_factory=dict, repr=False)

    def crashed(self, name: str, now: float) -> float | None:
        """Record that ``name`` exited at ``now``; the time to start it again, or None when
        it crashed ``max_crashes`` times within ``window_s`` and should stay down."""
        recent = self._crashes.setdefault(name, deque())
        recent.append(now)
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        if len(recent) >= self.max_crashes:
            return None
        backoff = min(self.max_backoff_s, self.min_backoff_s * 2 ** (len(recent) - 1))
        return now + backoff

    def crashes(self, name: str) -> int:
        """How many of ``name``'s crashes fall within the window (as of the last one)."""
        return len(self._crashes.get(name, ()))
