"""The traffic splits the broker holds: a cluster setting an operator changes at run time.

``set_traffic`` (:data:`~zeroserve.wire.frontend.ControlOp.SET_TRAFFIC`) sets or clears the
split of one service's version-less calls; the broker answers each split with its models,
and the gateways choose versions by it (:mod:`zeroserve.traffic`). Pure: no clock, no socket.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from zeroserve.traffic import TrafficError, describe_split, parse_split


@dataclass(frozen=True)
class TrafficChange:
    """A split set (or cleared: ``split`` empty), and the one log line that says so."""

    service: str
    split: dict[int, int]
    previous: dict[int, int]

    @property
    def log_line(self) -> str:
        if not self.split:
            return (f"broker: traffic split of {self.service} cleared (was "
                    f"{describe_split(self.previous)}); version-less calls go to the latest "
                    "version")
        return (f"broker: traffic split of {self.service} set to {describe_split(self.split)} "
                f"(was {describe_split(self.previous)})")


class TrafficSplits:
    """The split of each service that has one."""

    def __init__(self) -> None:
        self._splits: dict[str, dict[int, int]] = {}

    def of(self, service: str) -> dict[int, int]:
        """``service``'s split (empty: none)."""
        return self._splits.get(service, {})

    def set(self, service: str, weights: Any, served: Collection[int]) -> TrafficChange:
        """Set ``service``'s split from ``weights`` (``{version: percent}``; empty clears it);
        every version it names must be ``served``. Raises
        :class:`~zeroserve.traffic.TrafficError` saying why a split is refused."""
        split = parse_split(weights)
        missing = sorted(set(split) - set(served))
        if missing:
            raise TrafficError(
                f"service '{service}' serves no version {', '.join(map(str, missing))}; it "
                f"serves {', '.join(map(str, sorted(served)))}")
        previous = self._splits.pop(service, {})
        if split:
            self._splits[service] = split
        return TrafficChange(service, split, previous)

    def as_maps(self) -> Mapping[str, dict[int, int]]:
        """Every split, by service."""
        return dict(self._splits)
