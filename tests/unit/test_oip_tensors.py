"""OIP tensors <-> numpy: datatypes, JSON data, raw bytes, and the errors."""
from __future__ import annotations

import numpy as np
import pytest

from zeroserve.oip_tensors import (
    DATATYPES,
    TensorError,
    as_output,
    datatype_of,
    from_json,
    from_raw,
    numpy_dtype,
    to_json,
    to_raw,
)

SAMPLES = {
    "BOOL": [True, False], "UINT8": [0, 255], "UINT16": [0, 65535], "UINT32": [0, 2**32 - 1],
    "UINT64": [0, 2**64 - 1], "INT8": [-128, 127], "INT16": [-32768, 32767],
    "INT32": [-2**31, 2**31 - 1], "INT64": [-2**63, 2**63 - 1], "FP16": [-1.5, 65504.0],
    "FP32": [0.25, -3.0e38], "FP64": [1e-300, -1e300], "BYTES": ["", "café"],
}


@pytest.mark.parametrize("datatype", DATATYPES)
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
