"""Where a sync endpoint runs: inline on the worker's socket loop, or in a thread.

A thread hop costs far more than a fast model (hundreds of microseconds on a
small VM against tens for the `mlp` reference), but a slow call made inline
would hold back the heartbeats. So each endpoint starts in threads, moves
inline once its calls have proven short (the time each ran in its thread, not its wait
for one), and goes back to threads for good the first time an inline call runs long.
Pure: durations are passed in.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Placement:
    """Decides, per sync endpoint, whether the next call may run inline."""

    trial_calls: int = 50          # calls observed in threads before deciding
    inline_below_s: float = 0.002  # every trial call shorter than this -> inline
    evict_above_s: float = 0.05    # an inline call longer than this -> threads for good
    calls: int = 0
    longest_s: float = 0.0
    inline: bool = False
    pinned_to_threads: bool = False

    def observe(self, seconds: float) -> None:
        """Record how long a call took."""
        if self.inline:
            if seconds > self.evict_above_s:
                self.inline = False
                self.pinned_to_threads = True
            return
        self.calls += 1
        self.longest_s = max(self.longest_s, seconds)
        if (not self.pinned_to_threads and self.calls >= self.trial_calls
                and self.longest_s < self.inline_below_s):
            self.inline = True
