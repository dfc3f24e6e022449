"""The waiting requests of one endpoint, earliest deadline first, bounded.

Pure data structure: times are plain floats (seconds on the owner's
monotonic clock) passed in by the caller; nothing here reads a clock.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(slots=True)
class Pending:
    """A request waiting in the broker.

    ``frames`` ([meta, *body]) are opaque to the broker and forwarded as they
    are. ``rows`` counts rows along the batch dimension; requests share a batch
    only when their ``batch_key`` is equal. ``stages``: its caller wants its stages back.
    """

    request_id: bytes
    gateway: bytes
    deadline: float
    arrived: float
    frames: list
    rows: int = 1
    batch_key: bytes = b""
    stages: bool = False
    attempts: int = 0
    seq: int = field(default=0, compare=False)


class EndpointQueue:
    """Requests waiting for one endpoint, ordered by deadline (ties: arrival order).

    Also keeps the rows waiting per batch key, so that the policy learns in O(1)
    whether a full batch is waiting.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._heap: list[tuple[float, int, Pending]] = []
        self._seq = itertools.count()
        self._rows: dict[bytes, int] = {}

    @property
    def rows_by_key(self) -> Mapping[bytes, int]:
        """Rows waiting, per batch key (a read-only live view; no key with 0 rows)."""
        return MappingProxyType(self._rows)

    def _count(self, item: Pending, sign: int) -> None:
        left = self._rows.get(item.batch_key, 0) + sign * item.rows
        if left > 0:
            self._rows[item.batch_key] = left
        else:
            self._rows.pop(item.batch_key, None)

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Pending]:
        """The waiting requests in no particular order."""
        return (entry[2] for entry in self._heap)

    def push(self, item: Pending, force: bool = False) -> bool:
        """Add a request; False (and nothing added) when the queue is full.

        ``force`` admits a request past the capacity: for requeueing work that
        was already accepted, which must never be dropped for lack of room.
        """
        if len(self._heap) >= self.capacity and not force:
            return False
        item.seq = next(self._seq)
        heapq.heappush(self._heap, (item.deadline, item.seq, item))
        self._count(item, +1)
        return True

    def head(self) -> Pending | None:
        """The request with the earliest deadline, left in the queue."""
        return self._heap[0][2] if self._heap else None

    def oldest_arrival(self) -> float:
        """The earliest ``arrived`` among all waiting requests (inf when empty); O(n)."""
        return min((entry[2].arrived for entry in self._heap), default=float("inf"))

    def pop_expired(self, now: float) -> list[Pending]:
        """Remove and return every request whose deadline is at or before ``now``."""
        expired = []
        while self._heap and self._heap[0][0] <= now:
            item = heapq.heappop(self._heap)[2]
            self._count(item, -1)
            expired.append(item)
        return expired

    def remove(self, gateway: bytes, request_id: bytes) -> Pending | None:
        """Remove and return the request ``request_id`` of ``gateway`` (a cancelled one), or
        None if it does not wait here; O(n)."""
        for index, entry in enumerate(self._heap):
            item = entry[2]
            if item.request_id == request_id and item.gateway == gateway:
                self._heap[index] = self._heap[-1]
                self._heap.pop()
                heapq.heapify(self._heap)
                self._count(item, -1)
                return item
        return None

    def take(self, limit_rows: int) -> list[Pending]:
        """Remove the head and, in deadline order, the requests sharing its batch key,
        as long as their rows fit in ``limit_rows`` (the head is always taken)."""
        if not self._heap:
            return []
        first = heapq.heappop(self._heap)[2]
        taken, rows, skipped = [first], first.rows, []
        while self._heap and rows < limit_rows:
            entry = heapq.heappop(self._heap)
            item = entry[2]
            if item.batch_key != first.batch_key:
                skipped.append(entry)
                continue
            if rows + item.rows > limit_rows:
                skipped.append(entry)
                break
            taken.append(item)
            rows += item.rows
        for entry in skipped:
            heapq.heappush(self._heap, entry)
        for item in taken:
            self._count(item, -1)
        return taken
