"""OIP tensors <-> numpy: datatypes, JSON data, raw bytes, and the errors."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from zeroserve.wire.oip_tensors import (
    DATATYPES,
    MAX_ELEMENTS,
    RAW_ONLY,
    TensorError,
    as_output,
    check_shape,
    datatype_of,
    element_count,
    from_json,
    from_raw,
    numpy_dtype,
    shaped,
    to_json,
    to_raw,
)

SAMPLES = {
    "BOOL": [True, False], "UINT8": [0, 255], "UINT16": [0, 65535], "UINT32": [0, 2**32 - 1],
    "UINT64": [0, 2**64 - 1], "INT8": [-128, 127], "INT16": [-32768, 32767],
    "INT32": [-2**31, 2**31 - 1], "INT64": [-2**63, 2**63 - 1], "FP16": [-1.5, 65504.0],
    "FP32": [0.25, -3.0e38], "FP64": [1e-300, -1e300], "BYTES": ["", "café"],
}


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d not in RAW_ONLY])
def test_json_and_raw_round_trip(datatype: str) -> None:
    arr = from_json("t", datatype, [2, 1], SAMPLES[datatype])
    assert arr.shape == (2, 1) and datatype_of(arr.dtype) == datatype
    assert to_json(arr) == SAMPLES[datatype]  # flat, BYTES as text
    again = from_raw("t", datatype, [2, 1], bytes(to_raw(arr)))
    assert again.tolist() == arr.tolist()


def test_nested_and_flat_json_agree() -> None:
    nested = from_json("t", "INT32", [2, 2], [[1, 2], [3, 4]])
    flat = from_json("t", "INT32", [2, 2], [1, 2, 3, 4])
    np.testing.assert_array_equal(nested, flat)


def test_bytes_raw_form_is_length_prefixed() -> None:
    arr = np.array([b"ab", b""], dtype=object)
    assert bytes(to_raw(arr)) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"
    assert to_raw(np.array(["é"])) == b"\x02\x00\x00\x00\xc3\xa9"


def test_raw_numeric_is_a_view_and_little_endian() -> None:
    raw = np.arange(4, dtype="<i4").tobytes()
    arr = from_raw("t", "INT32", [4], raw)
    assert not arr.flags.owndata
    assert bytes(to_raw(np.arange(4, dtype=">i4"))) == raw


@pytest.mark.parametrize("args, message", [
    (("FP32", [3], [1.0, 2.0]), "needs 3 elements, data has 2"),
    (("INT8", [1], [300]), "out of the range of INT8"),
    (("UINT8", [1], [-1]), "out of the range of UINT8"),
    (("INT32", [1], [1.5]), "must be integers"),
    (("INT32", [1], [True]), "must be integers"),
    (("BOOL", [1], [1]), "true or false"),
    (("BYTES", [1], [3]), "must be strings"),
    (("FP32", [-1], [1.0]), "non-negative integers"),
    (("FP32", [1], "1.0"), "must be a list"),
    (("BF17", [1], [1]), "datatype 'BF17' is not supported"),
])
def test_json_errors(args: tuple, message: str) -> None:
    with pytest.raises(TensorError, match=message):
        from_json("t", *args)


@pytest.mark.parametrize("datatype, shape, raw, message", [
    ("FP32", [2], b"\x00" * 7, "needs 8 bytes, got 7"),
    ("BOOL", [1], b"\x02", "0 or 1"),
    ("BYTES", [1], b"\x05\x00\x00\x00ab", "runs past the end"),
    ("BYTES", [1], b"\x01\x00", "inside an element's length"),
    ("BYTES", [1], b"\x00\x00\x00\x00extra", "left over"),
])
def test_raw_errors(datatype: str, shape: list, raw: bytes, message: str) -> None:
    with pytest.raises(TensorError, match=message):
        from_raw("t", datatype, shape, raw)


def test_outputs_from_python_values() -> None:
    assert as_output(3).tolist() == [3]
    assert as_output("text").tolist() == ["text"]
    assert datatype_of(as_output([[1.0, 2.0]]).dtype) == "FP64"
    with pytest.raises(TensorError):
        as_output([object()])
    with pytest.raises(TensorError):
        as_output(np.array([1 + 2j]))
    assert numpy_dtype("BYTES") == np.dtype(object)


# bfloat16 bit patterns: 1.5, -1, +inf, -inf, a NaN with a payload, the smallest
# subnormal, -0.0 and the largest finite value
BF16_BITS = np.array([0x3FC0, 0xBF80, 0x7F80, 0xFF80, 0x7FC1, 0x0001, 0x8000, 0x7F7F],
                     dtype="<u2")


def test_bf16_raw_round_trips_bit_exactly_as_ml_dtypes_bfloat16() -> None:
    arr = from_raw("t", "BF16", [2, 4], BF16_BITS.tobytes())
    assert arr.dtype == ml_dtypes.bfloat16 and arr.shape == (2, 4)
    assert arr.view("<u2").reshape(-1).tolist() == BF16_BITS.tolist()
    assert bytes(to_raw(arr)) == BF16_BITS.tobytes()
    assert datatype_of(arr.dtype) == "BF16" and numpy_dtype("BF16") == arr.dtype
    assert datatype_of(as_output(arr).dtype) == "BF16"


def test_bf16_never_travels_in_json() -> None:
    with pytest.raises(TensorError, match="tensor 'x': BF16 cannot travel in JSON"):
        from_json("x", "BF16", [1], [1.5])
    with pytest.raises(TensorError, match="BF16 cannot travel in JSON"):
        to_json(np.ones(2, dtype=ml_dtypes.bfloat16))


def test_other_two_byte_void_dtypes_are_not_bf16() -> None:
    with pytest.raises(TensorError, match="no Open Inference Protocol datatype"):
        datatype_of(np.dtype("V2"))


def test_element_count_does_not_wrap() -> None:
    assert element_count((2**32, 2**32)) == 2**64  # np.prod wraps this to 0
    assert element_count(()) == 1 and element_count((0, 2**40)) == 0


SHAPES_NUMPY_CANNOT_HOLD = [[0, 2**70], [2**32, 2**32], [0, 2**40, 2**40], [0, 2**62, 4],
                            [2**63, 1]]


@pytest.mark.parametrize("shape", SHAPES_NUMPY_CANNOT_HOLD)
@pytest.mark.parametrize("datatype", ["FP32", "BOOL", "BYTES", "BF16"])
def test_raw_shape_past_numpy_is_a_tensor_error(shape: list, datatype: str) -> None:
    with pytest.raises(TensorError, match=r"tensor 'x': shape .* is too large"):
        from_raw("x", datatype, shape, b"")


@pytest.mark.parametrize("shape", SHAPES_NUMPY_CANNOT_HOLD)
@pytest.mark.parametrize("datatype", ["FP32", "INT64", "BYTES"])
def test_json_shape_past_numpy_is_a_tensor_error(shape: list, datatype: str) -> None:
    with pytest.raises(TensorError, match=r"tensor 'x': shape .* is too large"):
        from_json("x", datatype, shape, [])


@pytest.mark.parametrize("shape", [[-1], [2, -3], [1.0], [True], "12", None, [1] * 33])
def test_negative_or_malformed_dims_are_refused(shape: object) -> None:
    with pytest.raises(TensorError, match="tensor 'x': shape must be a list"):
        check_shape("x", shape)


def test_large_but_holdable_empty_shapes_are_accepted() -> None:
    assert from_raw("x", "FP32", [0, MAX_ELEMENTS], b"").shape == (0, MAX_ELEMENTS)
    assert from_json("x", "BYTES", [MAX_ELEMENTS, 0], []).shape == (MAX_ELEMENTS, 0)
    with pytest.raises(TensorError, match="too large"):
        check_shape("x", [0, MAX_ELEMENTS + 1])


def test_error_message_of_a_huge_shape_stays_short() -> None:
    with pytest.raises(TensorError) as info:
        check_shape("x", [10**200] * 32)
    assert len(str(info.value)) < 300


def test_what_numpy_raises_while_reshaping_becomes_a_tensor_error() -> None:
    with pytest.raises(TensorError, match="tensor 'x': cannot make an array of shape"):
        shaped("x", np.zeros(0), (2**32, 2**32))
