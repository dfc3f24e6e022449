"""Merging requests into one batch and splitting the output back by row counts."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batching.tensors import BatchMergeError, BatchSplitError, batch_key, merge, row_count, split


def test_single_request_passes_through_untouched():
    x = np.ones((2, 3), np.float32)
    merged, counts = merge([{"x": x, "k": 1}], 0)
    assert merged["x"] is x and merged["k"] == 1 and counts == [2]


def test_arrays_concatenate_and_other_values_become_lists():
    a, b = np.zeros((1, 3), np.float32), np.ones((2, 3), np.float32)
    merged, counts = merge([{"x": a, "k": 1}, {"x": b, "k": 2}], 0)
    assert merged["x"].shape == (3, 3) and merged["k"] == [1, 2] and counts == [1, 2]


def test_merge_along_another_dimension():
    a, b = np.zeros((3, 1)), np.ones((3, 2))
    merged, counts = merge([{"x": a}, {"x": b}], 1)
    assert merged["x"].shape == (3, 3) and counts == [1, 2]


@pytest.mark.parametrize("b", [np.ones((1, 4), np.float32), np.ones((1, 3), np.float64)])
def test_different_dtypes_or_shapes_are_refused(b):
    with pytest.raises(BatchMergeError, match="cannot be batched"):
        merge([{"x": np.zeros((1, 3), np.float32)}, {"x": b}], 0)


def test_split_returns_each_request_its_rows_for_arrays_dicts_and_tuples():
    out = np.arange(12).reshape(6, 2)
    pieces = split(out, [1, 2, 3], 0)
    assert [p.shape[0] for p in pieces] == [1, 2, 3]
    np.testing.assert_array_equal(np.concatenate(pieces), out)
    dicts = split({"a": out, "b": out * 2}, [4, 2], 0)
    assert dicts[1]["b"].tolist() == (out[4:] * 2).tolist()
    tuples = split((out, out), [3, 3], 0)
    assert isinstance(tuples[0], tuple) and tuples[1][0].shape == (3, 2)


def test_wrong_batch_size_in_output_is_a_clear_error():
    with pytest.raises(BatchSplitError, match="returned 7 rows along dimension 0 for a batch of 8"):
        split(np.zeros((7, 2)), [4, 4], 0)
    with pytest.raises(BatchSplitError, match="without a dimension"):
        split(3.0, [1, 1], 0)


def test_batch_key_depends_only_on_dtype_and_shape_past_the_batch_dimension():
    k1 = batch_key({"x": np.zeros((1, 4), np.float32)}, 0)
    assert k1 == batch_key({"x": np.zeros((9, 4), np.float32)}, 0)
    assert k1 != batch_key({"x": np.zeros((1, 5), np.float32)}, 0)
    assert k1 != batch_key({"x": np.zeros((1, 4), np.float64)}, 0)
    assert batch_key({}, 0) == b"" and row_count({}, 0) == 1


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=8), st.integers(1, 4))
def test_merge_then_split_round_trips(rows, width):
    reqs = [{"x": np.full((r, width), i, np.int32)} for i, r in enumerate(rows)]
    merged, counts = merge(reqs, 0)
    pieces = split(merged["x"], counts, 0)
    for req, piece in zip(reqs, pieces):
        np.testing.assert_array_equal(piece, req["x"])
