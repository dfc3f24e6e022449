"""``zeroserve traffic SERVICE 1=90 2=10``: the operator's traffic split of a service's
version-less calls (the broker's ``set_traffic`` control call; ``--clear`` removes it)."""
from __future__ import annotations

from collections.abc import Sequence

from zeroserve.traffic import TrafficError, describe_split, parse_split


def parse_weights(pairs: Sequence[str]) -> dict[int, int]:
    """``{version: percent}`` of ``VERSION=PERCENT`` arguments, checked as the broker checks
    a split (:func:`zeroserve.traffic.parse_split`); TrafficError saying what is wrong."""
    weights: dict[int, int] = {}
    for pair in pairs:
        version, sep, percent = pair.partition("=")
        if not sep or not version.strip().isdigit() or not percent.strip().isdigit():
            raise TrafficError(f"{pair!r} must look like VERSION=PERCENT, e.g. 2=10")
        if int(version) in weights:
            raise TrafficError(f"version {int(version)} is named twice")
        weights[int(version)] = int(percent)
    return parse_split(weights)


def answer_line(answer: dict) -> str:
    """What the command prints of the broker's answer (raises TrafficError for a refusal)."""
    if "error" in answer:
        raise TrafficError(str(answer["error"]))
    split = parse_split(answer.get("traffic") or {})
    if not split:
        return (f"{answer.get('service')}: traffic split cleared; version-less calls go to "
                "the latest version")
    return f"{answer.get('service')}: traffic split set to {describe_split(split)}"
