"""A steady load for the fault tests, and the tally of what became of every call and job.

Every call ends in one of three ways (:func:`classify`):

- **succeeded**: the endpoint's value came back by the deadline (+ the SDK's 1 s);
- **failed**: a gateway sent an error answer (an HTTP status with a JSON error), which the
  SDK raised as a typed exception with ``from_server`` True and the gateway's message;
- **hung**: no answer from a gateway by the deadline + 1 s: the SDK's own timeout fired
  (``DeadlineExceeded`` with ``from_server`` False), no gateway could be reached until the
  deadline (``Unreachable``), the answer came later than that, or the call had not returned
  when the load stopped.

A refused or reset connection that the SDK retried into a success within the deadline is a
success.
"""
from __future__ import annotations

import collections
import enum
import threading
import time
from dataclasses import dataclass, field

import zeroserve

ANSWER_GRACE_S = 1.0  # the SDK waits this long past the deadline for an answer (HTTP)
SLACK_S = 0.5  # scheduling slack on a shared VM before a late answer counts as hung


class Outcome(enum.Enum):
    """What became of one call."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # an error answer that a gateway sent
    HUNG = "hung"  # no answer from a gateway by the deadline + ANSWER_GRACE_S


def classify(error: BaseException | None, elapsed_s: float, deadline_s: float
             ) -> tuple[Outcome, str]:
    """The outcome of a call of deadline ``deadline_s`` that took ``elapsed_s`` seconds and
    raised ``error`` (None: it returned), and its kind: the exception's type for a failure,
    the reason for a hang ("" for a success)."""
    if isinstance(error, zeroserve.ZeroserveError) and not error.from_server:
        reason = "unreachable" if isinstance(error, zeroserve.Unreachable) else "no answer"
        return Outcome.HUNG, reason
    if elapsed_s > deadline_s + ANSWER_GRACE_S + SLACK_S:
        return Outcome.HUNG, "answered late"
    if error is None:
        return Outcome.SUCCEEDED, ""
    if isinstance(error, zeroserve.ZeroserveError):
        return Outcome.FAILED, type(error).__name__
    return Outcome.FAILED, f"unexpected {type(error).__name__}"


def _counts(counter: collections.Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "-"


@dataclass
class Tally:
    """Calls sent, succeeded, failed with a server-sent error (``failed``: by type), and hung
    (``hung`` of them, ``hung_reasons`` by reason); jobs submitted and succeeded."""

    sent: int = 0
    succeeded: int = 0
    failed: collections.Counter = field(default_factory=collections.Counter)
    hung: int = 0
    hung_reasons: collections.Counter = field(default_factory=collections.Counter)
    jobs_submitted: int = 0
    jobs_succeeded: int = 0

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def record(self, outcome: Outcome, kind: str) -> None:
        """Count one call that has ended."""
        if outcome is Outcome.SUCCEEDED:
            self.succeeded += 1
        elif outcome is Outcome.FAILED:
            self.failed[kind] += 1
        else:
            self.hung += 1
            self.hung_reasons[kind] += 1

    def line(self, fault: str) -> str:
        return (f"{fault}: sent {self.sent}, succeeded {self.succeeded}, "
                f"failed {self.failed_total} ({_counts(self.failed)}), "
                f"hung {self.hung} ({_counts(self.hung_reasons)}); "
                f"jobs submitted {self.jobs_submitted}, succeeded {self.jobs_succeeded}")


class SteadyLoad:
    """``threads`` callers, each calling ``service/endpoint`` with ``inputs`` back to back
    through one of ``urls`` (round-robin by thread), with ``timeout`` as every call's
    deadline."""

    def __init__(self, urls: list[str], service: str, endpoint: str, threads: int = 4,
                 timeout: float = 8.0, inputs: dict | None = None) -> None:
        self.urls, self.service, self.endpoint = urls, service, endpoint
        self.inputs = inputs or {}
        self.timeout = timeout
        self.tally = Tally()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False  # set by stop(): calls that end later are already counted
        self._in_call: set[int] = set()  # the callers inside a call
        self._threads = [threading.Thread(target=self._run, args=(i, urls[i % len(urls)]),
                                          daemon=True) for i in range(threads)]

    def start(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, caller: int, url: str) -> None:
        client = zeroserve.Client(url, timeout=self.timeout)
        while not self._stop.is_set():
            with self._lock:
                if self._closed:
                    break
                self.tally.sent += 1
                self._in_call.add(caller)
            started = time.monotonic()
            error: BaseException | None = None
            try:
                client.call(self.service, self.endpoint, **self.inputs)
            except Exception as exc:  # noqa: BLE001 (every outcome is counted, by type)
                error = exc
            outcome, kind = classify(error, time.monotonic() - started, self.timeout)
            with self._lock:
                if self._closed:
                    break
                self._in_call.discard(caller)
                self.tally.record(outcome, kind)
        client.close()

    def stop(self) -> Tally:
        """Stop the callers and return the tally; a caller still inside a call by then
        (its deadline + 1 s + slack after the stop) counts as hung."""
        self._stop.set()
        until = time.monotonic() + self.timeout + ANSWER_GRACE_S + SLACK_S
        for thread in self._threads:
            thread.join(max(0.0, until - time.monotonic()))
        with self._lock:
            self._closed = True
            for _ in self._in_call:
                self.tally.record(Outcome.HUNG, "still in the call at stop")
        return self.tally
