"""Whether a peer is alive, from when it was last heard: the one liveness rule of every daemon.

Peers send a heartbeat every ``interval_s`` seconds (and any other message counts
as much). A peer is alive while it was heard from within the last
``window_s = interval_s × missed_beats`` seconds, that last instant included, and
dead once silent for longer; a peer never heard from is dead. The broker applies
it to each worker (and evicts the dead ones), a worker to its broker (and
reconnects), a gateway to its broker (and answers 503 while it is dead).

Pure: the caller passes ``now`` (seconds, any monotonic origin, the same for
every call on one object); nothing here reads a clock.
"""
from __future__ import annotations

import math


class Liveness:
    """One peer's liveness: ``heard`` whenever a message comes from it, ``alive`` to ask."""

    def __init__(self, window_s: float, heard_at: float | None = None) -> None:
        self.window_s = window_s
        self.last_heard = heard_at  # None: never heard from

    @classmethod
    def of_heartbeats(cls, interval_s: float, missed_beats: int,
                      heard_at: float | None = None) -> Liveness:
        """A peer that beats every ``interval_s`` seconds and is dead after ``missed_beats``
        missed beats."""
        return cls(interval_s * missed_beats, heard_at)

    def heard(self, now: float) -> None:
        """The peer said something at ``now``."""
        self.last_heard = now

    def silent_for(self, now: float) -> float:
        """Seconds since the peer was last heard from (infinite if never)."""
        return math.inf if self.last_heard is None else now - self.last_heard

    def alive(self, now: float) -> bool:
        """Whether the peer was heard from within the window before ``now``."""
        return self.silent_for(now) <= self.window_s

    def dead(self, now: float) -> bool:
        """``not alive(now)``: silent for longer than the window, or never heard from."""
        return not self.alive(now)
