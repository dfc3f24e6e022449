"""The adaptive batching policy of one endpoint: when to dispatch, and how many rows.

Pure: the broker passes the time in (seconds, any monotonic origin) and calls
:meth:`BatchPolicy.decide` whenever something happens for the endpoint (an
arrival, a worker slot frees, a timer it set at ``wake_at`` fires), after
removing expired requests itself. It calls :meth:`BatchPolicy.arrived` for
every admitted request and :meth:`BatchPolicy.observe` for every finished batch.

Waiting for a batch to fill pays only when the workers need the saved time.
From the fitted execution time ``a·n + b`` (seconds for n rows) and the
estimated arrival rate ``λ`` (rows/s), the policy computes the smallest batch
that keeps the endpoint's slots below a target utilisation:
``λ·(a + b/n) / slots ≤ ρ``. At low traffic that is one row, so a lone request
goes at once (unlike a fixed batching window); as traffic grows so does the
batch, amortising ``b`` over more rows. The policy never waits past the oldest
waiting request's arrival plus ``max_latency_s``, nor past the point where the
earliest deadline could still be met by the predicted execution of a full batch
(unlike CorkDispatcher, which ignores deadlines), and never holds a free slot
while a full batch is waiting. When every slot is busy requests accumulate
anyway, and a freed slot takes everything compatible up to ``max_batch_size``.

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
_MIN_ROWS_VARIANCE = 0.25  # rows²; below it the batch sizes seen say nothing about the slope
_GROUP_BELOW_S = 0.001  # calls cheaper than this may travel several to a message
_MAX_GROUP = 8


@dataclass(frozen=True)
class BatchLimits:
    """``max_batch_size`` rows per batch (1: the endpoint does not batch); requests wait at
    most ``max_latency_s`` seconds in the queue for a batch to fill."""

    max_batch_size: int
    max_latency_s: float


@dataclass(frozen=True)
class Decision:
    """``take_rows`` > 0: dispatch ``queue.take(take_rows)`` now; 0: not now. ``wake_at``:
    when (seconds, the caller's clock) to decide again if nothing else happens first
    (None: only on events)."""

    take_rows: int
    wake_at: float | None


class LatencyModel:
    """Execution time ≈ a·n + b (seconds, n rows), fitted online by exponentially weighted
    least squares: each report weighs ``1/decay`` times the one before it.

    The fit keeps weighted means and centred sums (numerically stable at any batch
    size). While recent batches all had the same size, the slope cannot be told from
    the data: ``a`` keeps its last well-determined value and only ``b`` follows.
    Before any report, ``predict`` returns 0.
    """

    def __init__(self, decay: float = 0.98) -> None:
        self.decay = decay
        self.samples = 0
        self.a = 0.0
        self.b = 0.0
        self._w = self._mean_n = self._mean_s = self._snn = self._sns = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        """Record that a batch of ``rows`` rows ran for ``seconds``; nonsense (no rows,
        negative or non-finite time) is ignored."""
        if rows <= 0 or not (math.isfinite(seconds) and seconds >= 0.0):
            return
        self.samples += 1
        d = self.decay
        self._w = self._w * d + 1.0
        dn = rows - self._mean_n
        self._mean_n += dn / self._w
        self._mean_s += (seconds - self._mean_s) / self._w
        self._snn = self._snn * d + dn * (rows - self._mean_n)
        self._sns = self._sns * d + dn * (seconds - self._mean_s)
        if self._snn / self._w >= _MIN_ROWS_VARIANCE:
            self.a = max(self._sns / self._snn, 0.0)
        self.b = max(self._mean_s - self.a * self._mean_n, 0.0)

    def predict(self, rows: int) -> float:
        """Predicted seconds for a batch of ``rows`` (0 before any report)."""
        return self.a * rows + self.b


class BatchPolicy:
    """Decides dispatches for one endpoint; see the module docstring."""

    def __init__(self, limits: BatchLimits, model: LatencyModel | None = None) -> None:
        self.limits = limits
        self.model = model or LatencyModel()
        self._rate = 0.0  # rows per second, exponentially decayed
        self._rate_at = 0.0

    def arrived(self, now: float, rows: int) -> None:
        """Record that a request of ``rows`` rows was admitted at ``now`` (seconds). The
        broker calls this for every request it queues; it feeds the arrival-rate estimate."""
        self._decay_rate(now)
        self._rate += rows / _RATE_WINDOW_S

    def observe(self, rows: int, seconds: float) -> None:
        """Record a finished batch: ``rows`` rows executed in ``seconds`` (the worker's
        reported execution time). Forwarded to the latency model."""
        self.model.observe(rows, seconds)

    def arrival_rate(self, now: float) -> float:
        """Estimated arrivals in rows per second (exponential moving average, 0.5 s)."""
        self._decay_rate(now)
        return self._rate

    def _decay_rate(self, now: float) -> None:
        if now > self._rate_at:
            self._rate *= math.exp(-(now - self._rate_at) / _RATE_WINDOW_S)
            self._rate_at = now

    def target_rows(self, now: float, slots: int) -> int:
        """The smallest batch (rows) that keeps ``slots`` slots under the target utilisation
        at the current arrival rate; 1 when traffic is light, ``max_batch_size`` at most."""
        rate, a, b = self.arrival_rate(now), self.model.a, self.model.b
        capacity = _TARGET_UTILISATION * max(slots, 1)
        if rate * (a + b) <= capacity:
            return 1
        if rate * a >= capacity:
            return self.limits.max_batch_size
        return min(self.limits.max_batch_size, math.ceil(b / (capacity / rate - a)))

    def latest_dispatch(self, queue: EndpointQueue) -> float:
        """The last moment (seconds) the head's batch may still wait: the oldest arrival plus
        ``max_latency_s``, or the head's deadline minus a full batch's predicted execution,
        whichever comes first. ``inf`` for an empty queue."""
        head = queue.head()
        if head is None:
            return math.inf
        return min(queue.oldest_arrival() + self.limits.max_latency_s,
                   head.deadline - self.model.predict(self.limits.max_batch_size))

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
        """Dispatch now (``take_rows`` for ``queue.take``), or wait (until ``wake_at``).

        ``free_slots``/``busy_slots``: the endpoint's workers' slots that are idle / running
        a batch. Expired requests must already be gone from ``queue``.
        """
        head = queue.head()
        if free_slots <= 0 or head is None:
            return Decision(0, None)
        limit = self.limits.max_batch_size
        if limit <= 1:
            return Decision(self._group_size(len(queue), free_slots), None)
        waiting = queue.rows_by_key
        if max(waiting.values(), default=0) >= limit:  # the head's, or one queued behind it
            return Decision(limit, None)
        latest = self.latest_dispatch(queue)
        rows = waiting.get(head.batch_key, 0)
        if now >= latest or rows >= self.target_rows(now, free_slots + busy_slots):
            return Decision(limit, None)
        return Decision(0, latest)
