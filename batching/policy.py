"""The adaptive batching policy of one endpoint: when to dispatch, and how many rows.

Pure: the broker passes the time in and calls :meth:`BatchPolicy.decide` whenever
something happens for the endpoint (an arrival, a worker slot frees, a timer it
set at ``wake_at`` fires), after removing expired requests itself.

The policy waits for a batch to fill only when the traffic needs it. From the
fitted execution time ``a·n + b`` and the estimated arrival rate ``λ`` (rows/s)
it computes the smallest batch that keeps the workers below a target
utilisation: ``λ·(a + b/n) / slots ≤ ρ``. At low traffic that is one row, so a
lone request goes at once (unlike a fixed batching window); under load it
grows, amortising ``b``. It never waits past the oldest request's arrival plus
``max_latency_s``, nor past the point where the earliest deadline could still be
met by the predicted execution (unlike CorkDispatcher, which ignores deadlines).
When every slot is busy requests accumulate anyway, and a freed slot takes
everything compatible up to ``max_batch_size``.

For an endpoint that does not batch (``max_batch_size`` 1), several waiting
requests may share one message when calls are cheap and the queue outnumbers
the free slots; the worker runs them one by one (see ``_group_size``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from batching.queue import EndpointQueue

_TARGET_UTILISATION = 0.7
_RATE_WINDOW_S = 0.5  # time constant of the arrival-rate estimate
_GROUP_BELOW_S = 0.001  # calls cheaper than this may travel several to a message
_MAX_GROUP = 8


@dataclass(frozen=True)
class BatchLimits:
    """``max_batch_size`` rows per batch (1: the endpoint does not batch); requests wait at
    most ``max_latency_s`` in the queue for a batch to fill."""

    max_batch_size: int
    max_latency_s: float


@dataclass(frozen=True)
class Decision:
    """``take_rows`` > 0: dispatch ``queue.take(take_rows)`` now; 0: not now. ``wake_at``:
    when to decide again if nothing else happens first (None: only on events)."""

    take_rows: int
    wake_at: float | None


class LatencyModel:
    """Execution time ≈ a·n + b (seconds, n rows), fitted online by exponentially weighted
    least squares so that recent batches weigh more."""

    def __init__(self, decay: float = 0.98) -> None:
        self.decay = decay
        self.samples = 0
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self.a = 0.0
        self.b = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        """Record that a batch of ``rows`` rows ran for ``seconds``."""
        d = self.decay
        self._w = self._w * d + 1.0
        self._x = self._x * d + rows
        self._y = self._y * d + seconds
        self._xx = self._xx * d + rows * rows
        self._xy = self._xy * d + rows * seconds
        self.samples += 1
        mean_x, mean_y = self._x / self._w, self._y / self._w
        var_x = self._xx / self._w - mean_x * mean_x
        if var_x > 1e-9:
            a = (self._xy / self._w - mean_x * mean_y) / var_x
            self.a = max(a, 0.0)
            self.b = max(mean_y - self.a * mean_x, 0.0)
        else:  # one batch size seen so far: all of it counts as fixed cost
            self.a, self.b = 0.0, mean_y

    def predict(self, rows: int) -> float:
        """Predicted seconds for a batch of ``rows`` (0 before any observation)."""
        return self.a * rows + self.b


class BatchPolicy:
    """Decides dispatches for one endpoint; see the module docstring."""

    def __init__(self, limits: BatchLimits, model: LatencyModel | None = None) -> None:
        self.limits = limits
        self.model = model or LatencyModel()
        self._rate = 0.0  # rows per second, exponentially decayed
        self._rate_at = 0.0

    def arrived(self, now: float, rows: int) -> None:
        """Record an arrival of ``rows`` rows (the broker calls this for every request)."""
        self._decay_rate(now)
        self._rate += rows / _RATE_WINDOW_S

    def observe(self, rows: int, seconds: float) -> None:
        """Record a finished batch (forwarded to the latency model)."""
        self.model.observe(rows, seconds)

    def arrival_rate(self, now: float) -> float:
        """Estimated arrivals in rows per second."""
        self._decay_rate(now)
        return self._rate

    def _decay_rate(self, now: float) -> None:
        if now > self._rate_at:
            self._rate *= math.exp(-(now - self._rate_at) / _RATE_WINDOW_S)
            self._rate_at = now

    def target_rows(self, now: float, slots: int) -> int:
        """The smallest batch that keeps ``slots`` slots under the target utilisation."""
        rate, a, b = self.arrival_rate(now), self.model.a, self.model.b
        capacity = _TARGET_UTILISATION * max(slots, 1)
        if rate * (a + b) <= capacity:
            return 1
        if rate * a >= capacity:
            return self.limits.max_batch_size
        return min(self.limits.max_batch_size, math.ceil(b / (capacity / rate - a)))

    def _group_size(self, waiting: int, free_slots: int) -> int:
        """Requests of an endpoint that does not batch, sent in one message.

        Each still runs as its own call, one after another on the worker; grouping only
        saves the per-message cost, so it happens only when more requests wait than
        there are free slots (nobody is kept from an idle worker) and calls are cheap
        (the group's last request waits for the others).
        """
        if (waiting <= free_slots or not self.model.samples
                or self.model.predict(1) > _GROUP_BELOW_S):
            return 1
        return min(_MAX_GROUP, math.ceil(waiting / free_slots))

    def decide(self, queue: EndpointQueue, now: float, free_slots: int,
               busy_slots: int) -> Decision:
        """Dispatch now (how many rows), or wait (until when)."""
        limit = self.limits.max_batch_size
        if free_slots <= 0:
            return Decision(0, None)
        count, rows, oldest = queue.compatible(limit)
        head = queue.head()
        if count == 0 or head is None:
            return Decision(0, None)
        if limit == 1:
            return Decision(self._group_size(len(queue), free_slots), None)
        if rows >= limit:
            return Decision(limit, None)
        latest = min(oldest + self.limits.max_latency_s,
                     head.deadline - self.model.predict(limit))
        if now >= latest or rows >= self.target_rows(now, free_slots + busy_slots):
            return Decision(limit, None)
        return Decision(0, latest)
