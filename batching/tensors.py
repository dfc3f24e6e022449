"""Merging requests' tensors into one batch and splitting the result back (numpy, pure).

Requests share a batch only when their arrays agree in dtype and in every
dimension but the batch dimension; :func:`batch_key` names that agreement so
that the broker can keep incompatible requests apart without decoding them.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


class BatchMergeError(ValueError):
    """Requests whose inputs cannot be concatenated into one batch."""


class BatchSplitError(ValueError):
    """An endpoint output whose batch dimension does not match the batch it was given."""


def _arrays(inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: v for k, v in inputs.items() if isinstance(v, np.ndarray)}


def row_count(arrays: dict[str, np.ndarray], batch_dim: int) -> int:
    """Rows along ``batch_dim`` of the first array input (by name); 1 without arrays."""
    for name in sorted(arrays):
        arr = arrays[name]
        if arr.ndim > batch_dim:
            return int(arr.shape[batch_dim])
    return 1


def batch_key(arrays: dict[str, np.ndarray], batch_dim: int) -> bytes:
    """A short deterministic key of the array inputs' dtypes and shapes past ``batch_dim``."""
    parts = []
    for name in sorted(arrays):
        arr = arrays[name]
        shape = list(arr.shape)
        if len(shape) > batch_dim:
            del shape[batch_dim]
        parts.append(f"{name}:{arr.dtype.str}:{shape}")
    return hashlib.blake2b("|".join(parts).encode(), digest_size=8).digest() if parts else b""


def merge(inputs: list[dict[str, Any]], batch_dim: int) -> tuple[dict[str, Any], list[int]]:
    """Merge requests' inputs: arrays concatenated along ``batch_dim`` (one copy, into the
    batch), other values collected into a list with one entry per request.

    Returns the merged inputs and each request's row count. A single request's
    inputs pass through untouched.
    """
    counts = [row_count(_arrays(req), batch_dim) for req in inputs]
    if len(inputs) == 1:
        return inputs[0], counts
    names = list(inputs[0])
    for req in inputs[1:]:
        if list(req) != names:
            raise BatchMergeError(f"requests name different inputs: {names} and {list(req)}")
    merged: dict[str, Any] = {}
    for name in names:
        values = [req[name] for req in inputs]
        if not all(isinstance(v, np.ndarray) for v in values):
            merged[name] = values
            continue
        first = values[0]
        for v in values[1:]:
            if v.dtype != first.dtype or v.ndim != first.ndim or (
                    v.shape[:batch_dim] + v.shape[batch_dim + 1:]
                    != first.shape[:batch_dim] + first.shape[batch_dim + 1:]):
                raise BatchMergeError(
                    f"input '{name}': {v.dtype} {list(v.shape)} cannot be batched with "
                    f"{first.dtype} {list(first.shape)} along dimension {batch_dim}")
        try:
            merged[name] = np.concatenate(values, axis=batch_dim)
        except (ValueError, np.exceptions.AxisError) as exc:
            raise BatchMergeError(f"input '{name}': {exc}") from None
    return merged, counts


def _split_array(arr: Any, counts: list[int], batch_dim: int) -> list[Any]:
    if not isinstance(arr, np.ndarray) or arr.ndim <= batch_dim:
        raise BatchSplitError(f"endpoint returned {type(arr).__name__} without a dimension "
                              f"{batch_dim} to split a batch of {sum(counts)} rows along")
    total = sum(counts)
    if arr.shape[batch_dim] != total:
        raise BatchSplitError(f"endpoint returned {arr.shape[batch_dim]} rows along dimension "
                              f"{batch_dim} for a batch of {total}")
    return np.split(arr, np.cumsum(counts)[:-1], axis=batch_dim)


def split(output: Any, counts: list[int], batch_dim: int) -> list[Any]:
    """Split a batched output back into one piece per request, by ``counts`` rows.

    ``output`` is an array, or a dict / tuple / list of arrays (split element-wise).
    A single request gets ``output`` unchanged.
    """
    if len(counts) == 1:
        return [output]
    if isinstance(output, dict):
        per_key = {k: _split_array(v, counts, batch_dim) for k, v in output.items()}
        return [{k: pieces[i] for k, pieces in per_key.items()} for i in range(len(counts))]
    if isinstance(output, (tuple, list)) and not isinstance(output, np.ndarray):
        per_item = [_split_array(v, counts, batch_dim) for v in output]
        return [type(output)(pieces[i] for pieces in per_item) for i in range(len(counts))]
    return _split_array(output, counts, batch_dim)
