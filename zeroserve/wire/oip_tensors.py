"""Open Inference Protocol tensors <-> numpy arrays: datatypes, JSON ``data``, raw bytes.

Pure functions shared by the OIP HTTP and gRPC front ends. All raw data is
little-endian and row-major; a BYTES element is a 4-byte little-endian length
followed by its bytes. BYTES tensors become numpy object arrays of ``bytes``
(as in Triton's Python backend); arrays of ``str`` or fixed-width strings go
back out as BYTES. BF16 is ``ml_dtypes.bfloat16`` and travels raw only, never
in JSON.

Shapes are checked before numpy sees them: element counts are Python ints (no
wrap-around), and a shape whose non-zero dimensions multiply past
:data:`MAX_ELEMENTS` is refused, so every bad shape is a :class:`TensorError`
naming the tensor, never a numpy ``ValueError``, ``OverflowError`` or
``MemoryError``.
"""
from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from zeroserve.wire.dtypes import BFLOAT16

_NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "BF16": BFLOAT16, "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"), "BYTES": np.dtype(object),
}
_DATATYPE = {(dt.kind, dt.itemsize): name for name, dt in _NUMPY.items()
             if name not in ("BYTES", "BF16")}
DATATYPES = tuple(_NUMPY)
RAW_ONLY = frozenset({"BF16"})  # datatypes that never travel in JSON
MAX_DIMS = 32
# the most elements that a shape's non-zero dimensions may multiply to: far more than any
# 2 GiB message holds, and far below where numpy's size arithmetic overflows
MAX_ELEMENTS = 1 << 40
_LENGTH = struct.Struct("<I")
_JSON_TYPES: dict[str, tuple[type, ...]] = {"b": (bool,), "i": (int,), "u": (int,),
                                            "f": (int, float)}
_JSON_NAMES = {"b": "true or false", "i": "integers", "u": "integers", "f": "numbers"}


class TensorError(ValueError):
    """A tensor that cannot be read or written; the message names the tensor and the reason."""


def numpy_dtype(datatype: str, name: str = "?") -> np.dtype:
    """The numpy dtype of an OIP datatype (``BYTES``: object)."""
    try:
        return _NUMPY[datatype]
    except (KeyError, TypeError):
        raise TensorError(f"tensor '{name}': datatype {datatype!r} is not supported; "
                          f"expected one of {', '.join(DATATYPES)}") from None


def datatype_of(dtype: np.dtype) -> str:
    """The OIP datatype of a numpy dtype (strings and objects: ``BYTES``)."""
    if dtype.kind in "OSU":
        return "BYTES"
    if dtype == BFLOAT16:
        return "BF16"
    try:
        return _DATATYPE[(dtype.kind, dtype.itemsize)]
    except KeyError:
        raise TensorError(f"dtype {dtype} has no Open Inference Protocol datatype") from None


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    """A tensor's shape as a tuple of non-negative ints that numpy can hold.

    :class:`TensorError` for anything else: not a list, more than :data:`MAX_DIMS`
    dimensions, a dimension that is negative or not an int, or non-zero dimensions that
    multiply past :data:`MAX_ELEMENTS` (``[0, 2**70]`` holds no element, but numpy
    cannot make it)."""
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_DIMS or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise TensorError(f"tensor '{name}': shape must be a list of at most {MAX_DIMS} "
                          f"non-negative integers, got {_brief(shape)}")
    if math.prod(d for d in shape if d) > MAX_ELEMENTS:
        raise TensorError(f"tensor '{name}': shape {_brief(list(shape))} is too large: its "
                          f"non-zero dimensions multiply to more than {MAX_ELEMENTS} "
                          "(2**40) elements")
    return tuple(shape)


def _brief(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def element_count(shape: tuple[int, ...]) -> int:
    """The number of elements of a shape, as a Python int (numpy's product can wrap)."""
    return math.prod(shape)


def shaped(name: str, flat: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    """``flat`` reshaped to ``dims``; whatever numpy raises becomes a :class:`TensorError`."""
    try:
        return flat.reshape(dims)
    except (ValueError, OverflowError, MemoryError) as exc:
        raise TensorError(f"tensor '{name}': cannot make an array of shape {_brief(list(dims))}"
                          f" from {flat.size} elements ({exc})") from None


def object_array(name: str, items: list, dims: tuple[int, ...]) -> np.ndarray:
    """An object array of ``items`` (row-major) in shape ``dims``."""
    try:
        arr = np.empty(len(items), dtype=object)
    except MemoryError:
        raise TensorError(f"tensor '{name}': {len(items)} elements do not fit in memory"
                          ) from None
    arr[:] = items
    return shaped(name, arr, dims)


def from_json(name: str, datatype: str, shape: Any, data: Any) -> np.ndarray:
    """The array of a JSON tensor; ``data`` may be flat or nested, in row-major order."""
    dims = check_shape(name, shape)
    dtype = numpy_dtype(datatype, name)
    if datatype in RAW_ONLY:
        raise TensorError(f"tensor '{name}': {datatype} cannot travel in JSON 'data'; send it "
                          "as binary data (parameters.binary_data_size)")
    if not isinstance(data, list):
        raise TensorError(f"tensor '{name}': data must be a list, got {type(data).__name__}")
    flat = _flatten(data)
    if len(flat) != element_count(dims):
        raise _size_error(name, dims, len(flat))
    if dtype.kind == "O":
        if not all(isinstance(v, str) for v in flat):
            raise TensorError(f"tensor '{name}': BYTES data must be strings")
        return object_array(name, [v.encode() for v in flat], dims)
    if not all(isinstance(v, _JSON_TYPES[dtype.kind]) and
               (dtype.kind == "b" or not isinstance(v, bool)) for v in flat):
        raise TensorError(f"tensor '{name}': {datatype} data must be {_JSON_NAMES[dtype.kind]}")
    try:
        with np.errstate(over="raise", invalid="raise"):
            arr = np.array(flat, dtype=dtype)
    except (OverflowError, FloatingPointError, ValueError):
        raise TensorError(f"tensor '{name}': data out of the range of {datatype}") from None
    return shaped(name, arr, dims)


def _flatten(data: list) -> list:
    out: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _size_error(name: str, dims: tuple[int, ...], got: int) -> TensorError:
    return TensorError(f"tensor '{name}': shape {list(dims)} needs {element_count(dims)} "
                       f"elements, data has {got}")


def to_json(arr: np.ndarray) -> list:
    """A flat JSON ``data`` list (BYTES as UTF-8 strings; FP32 in its shortest decimal
    form, 0.1 rather than 0.10000000149011612). BF16 raises :class:`TensorError`: it
    travels raw only."""
    if arr.dtype == BFLOAT16:
        raise TensorError("BF16 cannot travel in JSON; send it as binary data")
    flat = arr.reshape(-1)
    if arr.dtype.kind in "OSU":
        return [_text(v) for v in flat.tolist()]
    if arr.dtype.kind == "f" and arr.dtype.itemsize == 4:  # shortest text that reads back the same
        return [float(str(v)) for v in flat]
    return flat.tolist()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def from_raw(name: str, datatype: str, shape: Any, raw: Any) -> np.ndarray:
    """The array of a raw (binary) tensor; numeric tensors are views of ``raw``, not copies."""
    dims = check_shape(name, shape)
    dtype = numpy_dtype(datatype, name)
    buf = memoryview(raw).cast("B")
    count = element_count(dims)
    if dtype.kind == "O":
        return object_array(name, _split_bytes(name, buf, count), dims)
    if len(buf) != count * dtype.itemsize:
        raise TensorError(f"tensor '{name}': {datatype} shape {list(dims)} needs "
                          f"{count * dtype.itemsize} bytes, got {len(buf)}")
    arr = shaped(name, np.frombuffer(buf, dtype=dtype, count=count), dims)
    if dtype.kind == "b" and arr.size and arr.view(np.uint8).max() > 1:
        raise TensorError(f"tensor '{name}': BOOL bytes must be 0 or 1")
    return arr


def _split_bytes(name: str, buf: memoryview, count: int) -> list[bytes]:
    items, offset, end = [], 0, len(buf)
    for _ in range(count):
        if offset + 4 > end:
            raise TensorError(f"tensor '{name}': BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(buf, offset)
        offset += 4
        if offset + length > end:
            raise TensorError(f"tensor '{name}': BYTES element of {length} bytes runs past "
                              "the end of the data")
        items.append(bytes(buf[offset:offset + length]))
        offset += length
    if offset != end:
        raise TensorError(f"tensor '{name}': {end - offset} bytes left over after "
                          f"{count} BYTES elements")
    return items


def to_raw(arr: np.ndarray) -> bytes | memoryview:
    """The raw form of an array: little-endian row-major bytes, or length-prefixed BYTES.

    A little-endian C-contiguous numeric array comes back as a view of its memory."""
    if arr.dtype.kind in "OSU":
        parts = []
        for value in arr.reshape(-1).tolist():
            data = value if isinstance(value, bytes) else str(value).encode()
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    datatype_of(arr.dtype)  # refuses dtypes OIP cannot carry
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return memoryview(arr.reshape(-1).view(np.uint8).data) if arr.size else b""


def as_output(value: Any) -> np.ndarray:
    """An endpoint's returned value as an array that OIP can carry."""
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (str, bytes)):
        arr = object_array("output", [value], (1,))
    else:
        try:
            arr = np.asarray(value)
        except ValueError:
            raise TensorError("the endpoint returned a ragged list, not a tensor") from None
        if arr.ndim == 0:
            arr = arr.reshape(1)
    if arr.dtype.kind == "O" and not all(isinstance(v, (str, bytes))
                                         for v in arr.reshape(-1).tolist()):
        raise TensorError("the endpoint returned objects that are not strings or bytes")
    datatype_of(arr.dtype)
    return arr
