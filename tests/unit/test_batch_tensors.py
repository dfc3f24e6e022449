"""Merging requests into one batch and splitting the output back by row counts."""
from collections import namedtuple

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from batching.tensors import BatchMergeError, BatchSplitError, batch_key, merge, row_count, split

# ---------------------------------------------------------------- merge


def test_single_request_passes_through_untouched():
    x = np.ones((2, 3), np.float32)
    inputs = {"x": x, "k": 1}
    merged, counts = merge([inputs], 0)
    assert merged is inputs and merged["x"] is x and counts == [2]


def test_arrays_concatenate_and_other_values_become_lists():
    a, b = np.zeros((1, 3), np.float32), np.ones((2, 3), np.float32)
    merged, counts = merge([{"x": a, "k": 1}, {"x": b, "k": 2}], 0)
    assert merged["x"].shape == (3, 3) and merged["k"] == [1, 2] and counts == [1, 2]
    assert not np.shares_memory(merged["x"], a)  # a new array: the caller may keep it


def test_merge_along_another_dimension():
    a, b = np.zeros((3, 1)), np.ones((3, 2))
    merged, counts = merge([{"x": a}, {"x": b}], 1)
    assert merged["x"].shape == (3, 3) and counts == [1, 2]


def test_requests_without_arrays_count_one_row_each():
    merged, counts = merge([{"text": "a"}, {"text": "b"}], 0)
    assert merged == {"text": ["a", "b"]} and counts == [1, 1]


def test_arrays_without_the_batch_dimension_are_collected_like_other_values():
    merged, counts = merge([{"x": np.zeros((2, 3)), "t": np.array(0.5)},
                            {"x": np.zeros((1, 3)), "t": np.array(0.7)}], 0)
    assert merged["x"].shape == (3, 3) and [float(t) for t in merged["t"]] == [0.5, 0.7]
    assert counts == [2, 1]


@pytest.mark.parametrize("b", [np.ones((1, 4), np.float32), np.ones((1, 3), np.float64),
                               np.ones((1, 3, 1), np.float32)])
def test_different_dtypes_or_shapes_are_refused(b):
    with pytest.raises(BatchMergeError, match="cannot be batched"):
        merge([{"x": np.zeros((1, 3), np.float32)}, {"x": b}], 0)


def test_requests_naming_different_inputs_are_refused():
    with pytest.raises(BatchMergeError, match="different inputs"):
        merge([{"x": np.zeros((1, 3)), "k": 1}, {"x": np.zeros((1, 3))}], 0)


def test_an_input_batched_in_one_request_and_not_in_another_is_refused():
    with pytest.raises(BatchMergeError, match="some requests and not in others"):
        merge([{"x": np.zeros((1, 3))}, {"x": 4}], 0)


def test_a_request_whose_inputs_disagree_on_rows_is_refused():
    with pytest.raises(BatchMergeError, match="request 1 has inputs with different row counts"):
        merge([{"x": np.zeros((2, 3)), "y": np.zeros(2)},
               {"x": np.zeros((2, 3)), "y": np.zeros(5)}], 0)


# ---------------------------------------------------------------- split


def test_split_returns_each_request_its_rows_for_arrays_dicts_and_tuples():
    out = np.arange(12).reshape(6, 2)
    pieces = split(out, [1, 2, 3], 0)
    assert [p.shape[0] for p in pieces] == [1, 2, 3]
    np.testing.assert_array_equal(np.concatenate(pieces), out)
    dicts = split({"a": out, "b": out * 2}, [4, 2], 0)
    assert dicts[1]["b"].tolist() == (out[4:] * 2).tolist()
    tuples = split((out, out), [3, 3], 0)
    assert isinstance(tuples[0], tuple) and tuples[1][0].shape == (3, 2)


def test_split_pieces_are_views_of_the_output_not_copies():
    out = np.arange(12).reshape(6, 2)
    assert all(np.shares_memory(p, out) for p in split(out, [2, 4], 0))


def test_split_along_another_dimension():
    out = np.arange(12).reshape(2, 6)
    pieces = split(out, [2, 4], 1)
    assert [p.shape for p in pieces] == [(2, 2), (2, 4)]


def test_a_list_with_one_entry_per_row_is_split_by_rows():
    assert split(["cat", "dog", "eel"], [1, 2], 0) == [["cat"], ["dog", "eel"]]
    ragged = [np.zeros(1), np.zeros(4), np.zeros(2)]  # one variable-sized array per row
    pieces = split(ragged, [2, 1], 0)
    assert [len(p) for p in pieces] == [2, 1] and pieces[1][0].shape == (2,)


def test_namedtuple_outputs_keep_their_type():
    Out = namedtuple("Out", "scores labels")
    pieces = split(Out(np.zeros((3, 2)), np.arange(3)), [1, 2], 0)
    assert isinstance(pieces[1], Out) and pieces[1].labels.tolist() == [1, 2]


def test_single_request_output_is_returned_unchanged():
    out = {"whatever": 3}
    assert split(out, [5], 0)[0] is out


def test_wrong_batch_size_in_output_is_a_clear_error():
    with pytest.raises(BatchSplitError, match="returned 7 rows along dimension 0 for a batch of 8"):
        split(np.zeros((7, 2)), [4, 4], 0)
    with pytest.raises(BatchSplitError, match="returned 2 rows along dimension 0 for a batch of 3"):
        split({"a": np.zeros(3), "b": ["x", "y"]}, [1, 2], 0)
    with pytest.raises(BatchSplitError, match="without a dimension"):
        split(3.0, [1, 1], 0)
    with pytest.raises(BatchSplitError, match="without a dimension 2"):
        split(np.zeros((4, 4)), [2, 2], 2)


# ---------------------------------------------------------------- keys and rows


def test_batch_key_depends_only_on_dtype_and_shape_past_the_batch_dimension():
    k1 = batch_key({"x": np.zeros((1, 4), np.float32)}, 0)
    assert len(k1) == 8
    assert k1 == batch_key({"x": np.zeros((9, 4), np.float32)}, 0)
    assert k1 != batch_key({"x": np.zeros((1, 5), np.float32)}, 0)
    assert k1 != batch_key({"x": np.zeros((1, 4), np.float64)}, 0)
    assert k1 != batch_key({"y": np.zeros((1, 4), np.float32)}, 0)
    assert batch_key({"x": np.zeros((4, 1))}, 1) == batch_key({"x": np.zeros((4, 7))}, 1)
    assert batch_key({}, 0) == b"" and row_count({}, 0) == 1


def test_batch_key_ignores_the_order_inputs_were_given_in():
    x, y = np.zeros((1, 2)), np.zeros((1, 3), np.int8)
    assert batch_key({"x": x, "y": y}, 0) == batch_key({"y": y, "x": x}, 0)


def test_batch_key_tells_apart_requests_that_give_different_optional_inputs():
    x = np.zeros((1, 2))
    assert batch_key({"x": x, "k": 3}, 0) == batch_key({"x": x, "k": "other"}, 0)
    assert batch_key({"x": x, "k": 3}, 0) != batch_key({"x": x}, 0)


def test_row_count_reads_the_first_array_with_a_batch_dimension():
    assert row_count({"b": np.zeros((3, 2)), "a": np.zeros((5,))}, 0) == 5
    assert row_count({"a": np.array(1.0), "b": np.zeros((3, 2)), "c": "text"}, 0) == 3
    assert row_count({"a": np.zeros((3, 2))}, 1) == 2


# ---------------------------------------------------------------- properties


dtypes = st.sampled_from([np.int32, np.float32, np.float64, np.uint8])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=8), st.integers(1, 4),
       st.integers(0, 2), dtypes)
def test_merge_then_split_round_trips(rows, width, batch_dim, dtype):
    def array(i, r):
        shape = [width, width + 1]
        shape.insert(batch_dim, r)
        return np.full(shape, i, dtype)

    reqs = [{"x": array(i, r), "y": array(i + 100, r), "k": i} for i, r in enumerate(rows)]
    merged, counts = merge(reqs, batch_dim)
    assert counts == rows
    assert merged["x"].shape[batch_dim] == sum(rows)
    if len(reqs) > 1:
        assert merged["k"] == list(range(len(reqs)))
    for output in (merged["x"], {"x": merged["x"], "y": merged["y"]},
                   (merged["x"], merged["y"])):
        pieces = split(output, counts, batch_dim)
        assert len(pieces) == len(reqs)
        for req, piece in zip(reqs, pieces):
            if isinstance(output, dict):
                np.testing.assert_array_equal(piece["y"], req["y"])
                piece = piece["x"]
            elif isinstance(output, tuple):
                np.testing.assert_array_equal(piece[1], req["y"])
                piece = piece[0]
            np.testing.assert_array_equal(piece, req["x"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=2, max_size=6), st.integers(0, 30))
def test_split_refuses_any_output_whose_rows_do_not_add_up(counts, wrong):
    assume(wrong != sum(counts))
    with pytest.raises(BatchSplitError,
                       match=f"returned {wrong} rows .* batch of {sum(counts)}$"):
        split(np.zeros((wrong, 2)), counts, 0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=4), st.integers(0, 2), dtypes)
def test_requests_with_equal_batch_keys_always_merge(shape, batch_dim, dtype):
    shape = tuple(shape) + (1,) * max(0, batch_dim + 1 - len(shape))
    first = np.zeros(shape, dtype)
    grown = list(shape)
    grown[batch_dim] += 2
    second = np.ones(grown, dtype)
    assert batch_key({"x": first}, batch_dim) == batch_key({"x": second}, batch_dim)
    merged, counts = merge([{"x": first}, {"x": second}], batch_dim)
    assert counts == [shape[batch_dim], shape[batch_dim] + 2]
