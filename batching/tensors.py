"""Merging requests' tensors into one batch and splitting the result back (numpy, pure).

Requests share a batch only when their arrays agree in dtype and in every
dimension but the batch dimension; :func:`batch_key` names that agreement so
that the broker can keep incompatible requests apart without decoding them.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np


class BatchMergeError(ValueError):
    """Requests whose inputs cannot be concatenated into one batch."""


class BatchSplitError(ValueError):
    """An endpoint output whose batch dimension does not match the batch it was given."""


def _batched(value: Any, batch_dim: int) -> bool:
    """An array with a batch dimension: concatenated when merging, counted in rows."""
    return isinstance(value, np.ndarray) and value.ndim > batch_dim


def _rest(shape: tuple, batch_dim: int) -> tuple:
    """The shape without the batch dimension."""
    return shape[:batch_dim] + shape[batch_dim + 1:]


def row_count(inputs: Mapping[str, Any], batch_dim: int) -> int:
    """Rows along ``batch_dim`` of the first array input (by name) that has that dimension;
    1 without one. Values that are not arrays are ignored."""
    for name in sorted(inputs):
        arr = inputs[name]
        if _batched(arr, batch_dim):
            return int(arr.shape[batch_dim])
    return 1


def batch_key(inputs: Mapping[str, Any], batch_dim: int) -> bytes:
    """A short (8-byte) deterministic key of the inputs' names and, for arrays, their dtype
    and shape past ``batch_dim``; ``b""`` for no inputs. Requests may share a batch only
    when their keys are equal. Values that are not arrays count by name only, so passing
    every input (not just the arrays) also keeps apart requests that differ in which
    optional inputs they give."""
    if not inputs:
        return b""
    parts: list[tuple[str, str | None, tuple | None]] = []
    for name in sorted(inputs):
        value = inputs[name]
        if isinstance(value, np.ndarray):
            parts.append((name, value.dtype.str, _rest(value.shape, batch_dim)))
        else:
            parts.append((name, None, None))
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()


def _check_rows(inputs: list[dict[str, Any]], batch_dim: int) -> list[int]:
    """Each request's rows; every batched array of a request must have that many."""
    counts = []
    for index, req in enumerate(inputs):
        rows = row_count(req, batch_dim)
        for name, arr in req.items():
            if _batched(arr, batch_dim) and arr.shape[batch_dim] != rows:
                raise BatchMergeError(
                    f"request {index} has inputs with different row counts along dimension "
                    f"{batch_dim}: '{name}' has {arr.shape[batch_dim]}, others {rows}")
        counts.append(rows)
    return counts


def merge(inputs: list[dict[str, Any]], batch_dim: int) -> tuple[dict[str, Any], list[int]]:
    """Merge requests' inputs into one batch.

    Arrays are concatenated along ``batch_dim`` (one ``np.concatenate`` per input: the
    only copy, into a new array the caller owns); other values, and arrays with no
    dimension ``batch_dim`` (such as 0-d parameters), become a list with one entry per
    request. Returns the merged inputs and each request's row count. A single
    request's inputs pass through untouched (the same dict and arrays).

    Raises :class:`BatchMergeError` when the requests name different inputs, an input has
    the batch dimension in some requests and not in others, arrays differ in dtype or in
    shape past ``batch_dim``, or one request's arrays differ in rows.
    """
    if len(inputs) == 1:
        return inputs[0], [row_count(inputs[0], batch_dim)]
    counts = _check_rows(inputs, batch_dim)
    names = sorted(inputs[0])
    for req in inputs[1:]:
        if sorted(req) != names:
            raise BatchMergeError(f"requests name different inputs: {names} and {sorted(req)}")
    merged: dict[str, Any] = {}
    for name in inputs[0]:
        values = [req[name] for req in inputs]
        batched = sum(_batched(v, batch_dim) for v in values)
        if batched == 0:
            merged[name] = values
            continue
        if batched < len(values):
            raise BatchMergeError(f"input '{name}' has a dimension {batch_dim} to batch along "
                                  "in some requests and not in others")
        first = values[0]
        for v in values[1:]:
            if v.dtype != first.dtype or _rest(v.shape, batch_dim) != _rest(first.shape,
                                                                              batch_dim):
                raise BatchMergeError(
                    f"input '{name}': {v.dtype} {list(v.shape)} cannot be batched with "
                    f"{first.dtype} {list(first.shape)} along dimension {batch_dim}")
        merged[name] = np.concatenate(values, axis=batch_dim)
    return merged, counts


def _split_value(value: Any, counts: list[int], batch_dim: int) -> list[Any]:
    """One output value split by rows: an array along ``batch_dim`` (views, no copies), or
    a list/tuple of per-row values (batch dimension 0 only) into lists/tuples."""
    total = sum(counts)
    if _batched(value, batch_dim):
        got = value.shape[batch_dim]
    elif isinstance(value, (list, tuple)) and batch_dim == 0:
        got = len(value)
    else:
        raise BatchSplitError(f"endpoint returned {type(value).__name__} without a dimension "
                              f"{batch_dim} to split a batch of {total} rows along")
    if got != total:
        raise BatchSplitError(f"endpoint returned {got} rows along dimension {batch_dim} "
                              f"for a batch of {total}")
    if isinstance(value, np.ndarray):
        return np.split(value, np.cumsum(counts)[:-1], axis=batch_dim)
    bounds = np.cumsum([0, *counts]).tolist()
    return [value[start:end] for start, end in zip(bounds, bounds[1:])]


def _is_array_sequence(output: Any, total: int, batch_dim: int) -> bool:
    """A tuple/list of batched arrays (split item by item), rather than one entry per row.
    Ambiguous only along dimension 0 with ``total`` entries: then it is a sequence of
    arrays if every item has ``total`` rows, else one entry per row."""
    if not (isinstance(output, (tuple, list)) and output
            and all(isinstance(v, np.ndarray) for v in output)):
        return False
    if batch_dim != 0 or len(output) != total:
        return True
    return all(_batched(v, 0) and v.shape[0] == total for v in output)


def split(output: Any, counts: list[int], batch_dim: int) -> list[Any]:
    """Split a batched output back into one piece per request, by ``counts`` rows.

    ``output`` may be an array (pieces are views of it); a dict of such values (split
    value by value); a tuple or list of such arrays (split item by item, pieces keep the
    container type); or, along dimension 0, a list or tuple with one entry per row
    (labels, say, or one variable-sized array per row). A single request gets ``output``
    unchanged.

    Raises :class:`BatchSplitError` when a value's batch dimension is not ``sum(counts)``
    or it has none.
    """
    if len(counts) == 1:
        return [output]
    if isinstance(output, dict):
        per_key = {k: _split_value(v, counts, batch_dim) for k, v in output.items()}
        return [{k: pieces[i] for k, pieces in per_key.items()} for i in range(len(counts))]
    if _is_array_sequence(output, sum(counts), batch_dim):
        per_item = [_split_value(v, counts, batch_dim) for v in output]
        make = getattr(type(output), "_make", type(output))  # namedtuples too
        return [make(pieces[i] for pieces in per_item) for i in range(len(counts))]
    return _split_value(output, counts, batch_dim)
