"""The timing rules of one job slot: when its attempt is overdue, when to keep its lease
alive, and when its child process may be started again.

Pure: the job lane (``worker/job_lane.py``) tells a :class:`SlotTiming` what
happened and when (seconds, any monotonic origin), asks it what is due at
``now`` on each watch tick, and does the I/O itself. The rules, for an attempt
that began at ``started`` with the dispatch's ``timeout_s`` and ``lease_s``:

- it is overdue, and its child is stopped, once ``now - started > timeout_s``
  (:attr:`Overdue.TIMED_OUT`), or once a cancel asked for at ``cancelled_at``
  is ignored for longer: ``now - cancelled_at > cancel_grace_s``
  (:attr:`Overdue.IGNORED_CANCEL`); the timeout is checked first;
- otherwise, once the broker has heard nothing of it for a third of its lease,
  ``now - last_report >= lease_s / 3``, a keep-alive is due (any event about
  the attempt renews the lease, so each one resets this);
- a child that could not load the service is started again no sooner than
  ``respawn_wait_s`` after it said so; any other child may be started at once.
"""
from __future__ import annotations

import enum

CANCEL_GRACE_S = 10.0  # a cancelled job still running after this is stopped
RESPAWN_WAIT_S = 5.0   # after a child could not load the service


class Overdue(enum.Enum):
    """Why a running attempt must be stopped now (its child killed and replaced)."""

    TIMED_OUT = "timed out"
    IGNORED_CANCEL = "ignored a cancel"


class SlotTiming:
    """What one slot's clock says; see the module docstring for the rules."""

    def __init__(self, cancel_grace_s: float = CANCEL_GRACE_S,
                 respawn_wait_s: float = RESPAWN_WAIT_S) -> None:
        self.cancel_grace_s = cancel_grace_s
        self.respawn_wait_s = respawn_wait_s
        self.started: float | None = None  # None: no attempt running
        self.timeout_s = 0.0
        self.lease_s = 0.0
        self.last_report = 0.0
        self.cancelled_at: float | None = None
        self.respawn_at = 0.0

    # ------------------------------------------------------------ events

    def begin(self, now: float, timeout_s: float, lease_s: float) -> None:
        """An attempt with this ``timeout_s`` and ``lease_s`` was handed to the child at
        ``now``."""
        self.started, self.timeout_s, self.lease_s = now, timeout_s, lease_s
        self.last_report, self.cancelled_at = now, None

    def reported(self, now: float) -> None:
        """An event about the running attempt went to the broker at ``now``."""
        self.last_report = now

    def cancel(self, now: float) -> None:
        """The broker asked at ``now`` to cancel the running attempt (a repeat is ignored:
        the grace runs from the first ask)."""
        if self.started is not None and self.cancelled_at is None:
            self.cancelled_at = now

    def end(self) -> None:
        """The attempt finished, failed or was stopped; the slot runs nothing."""
        self.started, self.cancelled_at = None, None

    def broken(self, now: float) -> None:
        """The slot's child said at ``now`` that it cannot load the service."""
        self.respawn_at = now + self.respawn_wait_s

    # ------------------------------------------------------------ decisions

    @property
    def cancelled(self) -> bool:
        """Whether the running attempt was asked to cancel."""
        return self.cancelled_at is not None

    def overdue(self, now: float) -> Overdue | None:
        """Why the running attempt must be stopped at ``now``, or None (also with no attempt)."""
        if self.started is None:
            return None
        if now - self.started > self.timeout_s:
            return Overdue.TIMED_OUT
        if self.cancelled_at is not None and now - self.cancelled_at > self.cancel_grace_s:
            return Overdue.IGNORED_CANCEL
        return None

    def keep_alive_due(self, now: float) -> bool:
        """Whether the running attempt's lease needs a keep-alive event at ``now``."""
        return self.started is not None and now - self.last_report >= self.lease_s / 3

    def may_respawn(self, now: float) -> bool:
        """Whether a child for this slot may be started at ``now``."""
        return now >= self.respawn_at

    def reason(self, overdue: Overdue) -> str:
        """The failure message of an attempt stopped for ``overdue``."""
        if overdue is Overdue.TIMED_OUT:
            return f"timed out after {self.timeout_s:g}s"
        return f"cancelled, and still running after {self.cancel_grace_s:g}s"
