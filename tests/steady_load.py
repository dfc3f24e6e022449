"""A steady load for the fault tests, and the tally of what became of every call and job."""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

import zeroserve

HANG_GRACE_S = 5.0  # a call not back this long after its deadline counts as hung


@dataclass
class Tally:
    """Calls sent, succeeded, failed with an explicit error (by type), and hung; jobs."""

    sent: int = 0
    succeeded: int = 0
    failed: collections.Counter = field(default_factory=collections.Counter)
    hung: int = 0
    jobs_submitted: int = 0
    jobs_succeeded: int = 0

    def line(self, fault: str) -> str:
        failed = sum(self.failed.values())
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items())) or "-"
        return (f"{fault}: sent {self.sent}, succeeded {self.succeeded}, failed {failed} "
                f"({kinds}), hung {self.hung}; jobs submitted {self.jobs_submitted}, "
                f"succeeded {self.jobs_succeeded}")


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
        self._threads = [threading.Thread(target=self._run, args=(urls[i % len(urls)],),
                                          daemon=True) for i in range(threads)]

    def start(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, url: str) -> None:
        client = zeroserve.Client(url, timeout=self.timeout)
        while not self._stop.is_set():
            started = time.monotonic()
            with self._lock:
                self.tally.sent += 1
            try:
                client.call(self.service, self.endpoint, **self.inputs)
                outcome = None
            except zeroserve.ZeroserveError as exc:
                outcome = type(exc).__name__
            except Exception as exc:  # noqa: BLE001 (anything else is counted, by type)
                outcome = f"unexpected {type(exc).__name__}"
            late = time.monotonic() - started > self.timeout + HANG_GRACE_S
            with self._lock:
                if late:
                    self.tally.hung += 1
                elif outcome is None:
                    self.tally.succeeded += 1
                else:
                    self.tally.failed[outcome] += 1
        client.close()

    def stop(self) -> Tally:
        """Stop the callers; a caller still inside a call past its deadline counts as hung."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + HANG_GRACE_S)
            if thread.is_alive():
                self.tally.hung += 1
        return self.tally
