"""When to add or remove a worker, from the broker's statistics (pure; the clock is passed in).

Each observation gives the service's queue depth (requests waiting in all its
endpoints' queues) and its slot utilisation (batches in flight / slots, smoothed).
The policy scales up when more than ``up_queue_per_worker`` requests per worker
wait or utilisation is above ``up_utilisation``: to as many workers as the queue
asks for (``queued / up_queue_per_worker``), at least one more and at most twice
as many. It scales down by one when nothing has waited and utilisation stayed
below ``down_utilisation`` for ``idle_s``. After any change it holds still until
the broker counts the new number of workers (a worker takes a while to start and
register; at most ``settle_s``), then for ``cooldown_s``, so that the new
workers' effect is seen before the next decision; it never leaves
``[minimum, maximum]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScalePolicy:
    """The bounds, thresholds and times (seconds) of the autoscaler; see the module."""

    minimum: int = 1
    maximum: int = 8
    up_queue_per_worker: float = 2.0
    up_utilisation: float = 0.85
    down_utilisation: float = 0.3
    idle_s: float = 30.0
    cooldown_s: float = 15.0
    settle_s: float = 60.0  # the longest wait for the broker to count a change
    smoothing: float = 0.5  # weight of the newest utilisation sample

    def __post_init__(self) -> None:
        if not 0 <= self.minimum <= self.maximum or self.maximum < 1:
            raise ValueError(f"need 0 <= minimum <= maximum and maximum >= 1, got "
                             f"{self.minimum} and {self.maximum}")
        if self.up_queue_per_worker <= 0 or not 0 < self.smoothing <= 1:
            raise ValueError("up_queue_per_worker must be > 0 and smoothing in (0, 1]")


@dataclass(frozen=True)
class Observation:
    """One look at the service: ``workers`` registered, ``queued`` requests waiting,
    ``in_flight`` batches held out of ``slots``."""

    workers: int
    queued: int
    in_flight: int
    slots: int


@dataclass(frozen=True)
class Decision:
    """``target`` workers (the current count when nothing changes) and why."""

    target: int
    reason: str


def service_of(stats: dict) -> str:
    """The one service the broker's workers serve, or "" when none or several."""
    names = {w["service"] for w in stats.get("workers", [])}
    return names.pop() if len(names) == 1 else ""


def observe(stats: dict, service: str) -> Observation:
    """The service's figures in a broker STATS answer."""
    workers = [w for w in stats.get("workers", []) if w["service"] == service
               and not w.get("draining")]
    queued = sum(e["queued"] for name, e in stats.get("endpoints", {}).items()
                 if name.split(".", 1)[0] == service)
    return Observation(len(workers), queued, sum(w["in_flight"] for w in workers),
                       sum(w["slots"] for w in workers))


class Autoscaler:
    """Feeds observations to the policy; remembers the smoothed utilisation, the last change
    (and the count it asked for until the broker shows it) and since when the service has
    been idle."""

    def __init__(self, policy: ScalePolicy) -> None:
        self.policy = policy
        self.utilisation = 0.0
        self.changed_at = float("-inf")
        self.settling: int | None = None
        self.idle_since: float | None = None

    def decide(self, seen: Observation, now: float) -> Decision:
        """What to do now; call :meth:`changed` when a change was made."""
        p = self.policy
        sample = seen.in_flight / seen.slots if seen.slots else 0.0
        self.utilisation = p.smoothing * sample + (1 - p.smoothing) * self.utilisation
        busy = seen.queued > 0 or self.utilisation >= p.down_utilisation
        self.idle_since = None if busy else (self.idle_since if self.idle_since is not None
                                             else now)
        workers = seen.workers
        if self.settling is not None:
            if workers != self.settling and now - self.changed_at < p.settle_s:
                return Decision(workers, f"waiting for {self.settling} workers to register")
            self.settling, self.changed_at = None, now
        if workers < p.minimum:
            return Decision(p.minimum, f"below the minimum of {p.minimum}")
        if workers > p.maximum:
            return Decision(p.maximum, f"above the maximum of {p.maximum}")
        if now - self.changed_at < p.cooldown_s:
            return Decision(workers, "cooling down")
        load = f"{seen.queued} queued, utilisation {self.utilisation:.2f}"
        if seen.queued > p.up_queue_per_worker * workers \
                or self.utilisation > p.up_utilisation:
            if workers >= p.maximum:
                return Decision(workers, f"at the maximum of {p.maximum} ({load})")
            wanted = math.ceil(seen.queued / p.up_queue_per_worker)
            step = max(workers + 1, min(wanted, 2 * workers))
            return Decision(min(step, p.maximum), load)
        if workers > p.minimum and self.idle_since is not None \
                and now - self.idle_since >= p.idle_s:
            return Decision(workers - 1, f"idle for {now - self.idle_since:.0f}s, "
                                         f"utilisation {self.utilisation:.2f}")
        return Decision(workers, "steady")

    def changed(self, now: float, target: int) -> None:
        """Record that the fleet was resized to ``target`` workers at ``now``: wait for the
        broker to count them, then cool down; idle time restarts."""
        self.changed_at, self.settling = now, target
        self.idle_since = None
