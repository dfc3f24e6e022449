"""Which workers and control calls a broker admits: those of its own cluster.

Two clusters on one host can end up on the same broker ports (a second
``zeroserve serve`` whose own broker failed to bind, a fleet started twice): a
worker of the other cluster would then register here and this cluster would
list a service that nobody of its own serves. So every READY and CONTROL names
its cluster (``cluster.name``), and the broker refuses those that name another
one. A message that names none is admitted: operator tools (``zeroserve
status``) and older peers send none.

Pure bookkeeping, no sockets: :class:`ClusterAdmission` says whether to admit
and, for a refusal, whether to log it (once per foreign worker id, once per
foreign cluster for control calls) and whether to answer it (once per worker
connection, so that an older worker that answers every DISCONNECT with a READY
cannot make the two loop). What it remembers is bounded.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

_REMEMBERED = 1024  # refused worker ids, connections and clusters kept, each


@dataclass(frozen=True)
class Refusal:
    """A refused READY or CONTROL: ``message`` for the peer, ``log_line`` for the broker's
    log, ``log`` whether to log it now (not logged before) and ``answer`` whether to answer
    (False: this connection was refused before)."""

    message: str
    log_line: str
    log: bool
    answer: bool = True


def _first_time(seen: OrderedDict, key: object) -> bool:
    """Remember ``key``; whether it is new. The oldest keys are forgotten past the bound."""
    if key in seen:
        return False
    seen[key] = None
    if len(seen) > _REMEMBERED:
        seen.popitem(last=False)
    return True


class ClusterAdmission:
    """Admits the peers of cluster ``name`` and those that name no cluster."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._workers: OrderedDict[str, None] = OrderedDict()
        self._connections: OrderedDict[bytes, None] = OrderedDict()
        self._callers: OrderedDict[str, None] = OrderedDict()

    def admits(self, cluster: str) -> bool:
        """Whether a peer naming ``cluster`` ("" for none) belongs here."""
        return not cluster or cluster == self.name

    def refuse_worker(self, identity: bytes, worker_id: str, cluster: str) -> Refusal:
        """The refusal of a READY from ``worker_id`` (connection ``identity``) of ``cluster``."""
        return Refusal(
            f"this broker is of cluster '{self.name}', not '{cluster}'",
            f"broker: refused worker {worker_id} of cluster '{cluster}' (this is '{self.name}')",
            log=_first_time(self._workers, worker_id),
            answer=_first_time(self._connections, identity))

    def refuse_call(self, cluster: str) -> Refusal:
        """The refusal of a control call from a peer of ``cluster``."""
        return Refusal(
            f"this broker is of cluster '{self.name}', the call came from cluster '{cluster}'",
            f"broker: refused control calls of cluster '{cluster}' (this is '{self.name}')",
            log=_first_time(self._callers, cluster))
