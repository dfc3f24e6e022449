"""Traffic splits: how the version-less calls of a service spread over its versions (pure).

A split is ``{version: percent}``, percents that sum to 100: while an operator has set one
(``zeroserve traffic``, the ``set_traffic`` control call), a call that names no version runs
version ``v`` with probability ``split[v] / 100``; without one it runs the latest version
served. The broker holds the split (a cluster setting) and answers it with its models; each
gateway chooses the version of each call itself, before it validates the call's inputs
against that version's schema.

The choice :func:`choose_version` takes a draw in ``[0, 1)`` and walks the cumulative
percents of the versions in ascending order. Versions of the split that no worker serves at
the time drop out and the others keep their proportions; a split none of whose versions is
served chooses nothing (the caller falls back to the latest version).

:class:`SpreadDraws` gives the draws: an additive recurrence ``x_{n+1} = x_n + 1/phi mod 1``
from a random start. Its first ``n`` values are spread over ``[0, 1)`` with a discrepancy of
``O(log n / n)``, so that over any ``n`` calls of one gateway each version gets its share to
within a call or two: a canary of 10 % gets 100 of 1,000 calls, not 100 +- 9.5 as with
independent draws, while the random start keeps gateways from choosing in lockstep.
"""
from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from typing import Any

_STEP = (5 ** 0.5 - 1) / 2  # 1/phi: the most evenly spreading step of an additive recurrence


class TrafficError(ValueError):
    """A split that cannot be set: its message says why (the operator sees it)."""


def parse_split(value: Any) -> dict[int, int]:
    """A split from ``{version: percent}`` (versions as ints or decimal strings of at least 1,
    percents as ints 0..100 that sum to 100); an empty map is no split. Raises
    :class:`TrafficError` naming what is wrong."""
    if not isinstance(value, Mapping):
        raise TrafficError(f"a traffic split must be a map of versions to percents, not "
                           f"{type(value).__name__}")
    split: dict[int, int] = {}
    for key, percent in value.items():
        version = int(key) if isinstance(key, str) and key.isdigit() else key
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise TrafficError(f"version {key!r} is not an integer of at least 1")
        if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
            raise TrafficError(f"the percent of version {version} must be an integer 0..100, "
                               f"not {percent!r}")
        if version in split:
            raise TrafficError(f"version {version} is named twice")
        split[version] = percent
    total = sum(split.values())
    if split and total != 100:
        raise TrafficError(f"the percents must sum to 100, not {total}")
    return dict(sorted(split.items()))


def describe_split(split: Mapping[int, int]) -> str:
    """``1=90 2=10`` (``none`` for no split), as the command line writes it and logs say."""
    return " ".join(f"{v}={p}" for v, p in sorted(split.items())) or "none"


def choose_version(split: Mapping[int, int], served: Collection[int], draw: float
                   ) -> int | None:
    """The version that ``draw`` (in ``[0, 1)``) picks among the versions of ``split`` that
    are ``served``, in proportion to their percents; None if none of them is served (or
    their percents are all 0)."""
    weights = [(v, p) for v, p in sorted(split.items()) if v in served and p > 0]
    total = sum(p for _, p in weights)
    if not total:
        return None
    point = draw * total
    for version, percent in weights:
        if point < percent:
            return version
        point -= percent
    return weights[-1][0]  # draw * total rounded up to total


class SpreadDraws:
    """Draws in ``[0, 1)`` for :func:`choose_version` (see the module docstring); ``start``
    (default: random) fixes the sequence."""

    def __init__(self, start: float | None = None) -> None:
        self._x = random.random() if start is None else start % 1.0

    def next(self) -> float:
        """The next draw."""
        self._x = (self._x + _STEP) % 1.0
        return self._x
