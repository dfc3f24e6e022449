"""Input and output schemas of endpoints, and validation of incoming values.

A schema is a list of :class:`Field`; it travels from worker to broker to
gateway inside the descriptions of ``zeroserve.wire.descriptions`` (as maps:
``Field.to_map`` / ``Field.from_map``), and the gateway validates every request
against it before anything reaches the broker. A tensor's ``dtype`` is any
name numpy knows (``"float32"``, ``"<i8"``) or ``"bfloat16"``
(``ml_dtypes.bfloat16``).
"""
from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from zeroserve.wire.dtypes import BFLOAT16, dtype_named, is_float
from zeroserve.wire.envelope import ProtocolError

KINDS = ("tensor", "int", "float", "str", "bool", "list", "dict", "any")
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (float, int), "str": (str,), "bool": (bool,),
    "list": (list, tuple), "dict": (dict,),
}


class InvalidInput(ValueError):
    """A request input that does not match the endpoint's schema."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"input '{name}': {reason}")
        self.name = name
        self.reason = reason


class InvalidOutput(ValueError):
    """An endpoint's answer that does not match its declared outputs; the message names the
    output."""


@dataclass(frozen=True)
class Tensor:
    """Declares a numpy input or output: ``Annotated[np.ndarray, Tensor("float32", (-1, 64))]``.

    ``dtype`` is a numpy dtype name or ``"bfloat16"`` (``ml_dtypes.bfloat16``); None
    accepts any numeric dtype. In ``shape`` -1 (or None) is a dimension of any size, and
    ``shape`` None accepts any shape.
    """

    dtype: str | None = None
    shape: tuple | None = None


@dataclass(frozen=True)
class Field:
    """One named input (or the output) of an endpoint."""

    name: str
    kind: str = "any"
    dtype: str | None = None
    shape: tuple | None = None
    required: bool = True

    def to_map(self) -> dict:
        """The map that endpoint and task descriptions carry (``zeroserve.wire.descriptions``)."""
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype,
                "shape": None if self.shape is None else list(self.shape),
                "required": self.required}

    @classmethod
    def from_map(cls, value: Any, what: str = "field") -> Field:
        """Read a field's map (absent keys take the defaults above); raises
        :class:`~zeroserve.wire.envelope.ProtocolError` with the reason on a bad one."""
        if not isinstance(value, dict):
            raise ProtocolError(f"{what} must be a map")
        name = value.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"{what} needs a name")
        what = f"{what} '{name}'"
        kind, dtype = value.get("kind", "any"), value.get("dtype")
        if kind not in KINDS:
            raise ProtocolError(f"{what}: unknown kind {kind!r}")
        if dtype is not None and not _names_a_dtype(dtype):
            raise ProtocolError(f"{what}: dtype must be the name of a dtype or null")
        shape = value.get("shape")
        if shape is not None and (not isinstance(shape, list) or not all(
                d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= -1)
                for d in shape)):
            raise ProtocolError(f"{what}: shape must be a list of sizes (-1 or null: any) "
                                "or null")
        required = value.get("required", True)
        if not isinstance(required, bool):
            raise ProtocolError(f"{what}: required must be a boolean")
        return cls(name, kind, dtype,
                   None if shape is None else tuple(-1 if d is None else d for d in shape),
                   required)


def _names_a_dtype(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    try:
        dtype_named(name)
    except (TypeError, ValueError):
        return False
    return True


def _shape_mismatch(field: Field, shape: tuple) -> str | None:
    """Why ``shape`` does not fit the field's declared shape, or None if it does."""
    if field.shape is None:
        return None
    if len(shape) != len(field.shape) or any(
            want not in (-1, got) for want, got in zip(field.shape, shape)):
        want = "[" + ", ".join("-1" if d == -1 else str(d) for d in field.shape) + "]"
        return f"shape {list(shape)} does not match {want}"
    return None


def _check_shape(field: Field, shape: tuple) -> None:
    mismatch = _shape_mismatch(field, shape)
    if mismatch is not None:
        raise InvalidInput(field.name, mismatch)


def _string_array(field: Field, arr: np.ndarray) -> np.ndarray:
    """An object array of str/bytes (as OIP BYTES tensors arrive), kept as objects unless the
    field asks for ``U`` (decoded as UTF-8) or ``S``."""
    items = arr.reshape(-1).tolist()
    if not all(isinstance(v, (str, bytes)) for v in items):
        raise InvalidInput(field.name, "not a rectangular array of numbers or strings")
    want = None if field.dtype is None else dtype_named(field.dtype).kind
    if want == "U":
        try:
            return np.array([v.decode() if isinstance(v, bytes) else v for v in items],
                            dtype=str).reshape(arr.shape)
        except UnicodeDecodeError:
            raise InvalidInput(field.name, "strings must be UTF-8") from None
    if want == "S":
        return np.array([v.encode() if isinstance(v, str) else v for v in items],
                        dtype=bytes).reshape(arr.shape)
    if want not in (None, "O"):
        raise InvalidInput(field.name, f"strings cannot be used as {dtype_named(field.dtype)}")
    return arr


def _narrow(field: Field, arr: np.ndarray, want: np.dtype) -> np.ndarray:
    """``arr`` cast to ``want``; values that the cast would wrap or turn infinite are refused."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(want)
    if want.kind in "iu" and arr.dtype.kind in "iub":
        lost = not np.array_equal(out.astype(arr.dtype), arr)
    elif is_float(want):
        infinite = np.isinf(out)
        lost = bool(infinite.any()) and bool(np.any(infinite & np.isfinite(arr)))
    else:
        lost = False
    if lost:
        raise InvalidInput(field.name, f"values out of the range of {want}")
    return out


def coerce_tensor(field: Field, value: Any) -> np.ndarray:
    """Turn a JSON list or a decoded array into an array of the field's dtype and shape."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        if isinstance(value, (str, bytes, dict)) or value is None:
            raise InvalidInput(field.name, f"expected an array, got {type(value).__name__}")
        try:
            arr = np.asarray(value)
        except ValueError as exc:  # ragged nested lists
            raise InvalidInput(field.name, f"not a rectangular array ({exc})") from None
    if arr.dtype.kind == "O":
        arr = _string_array(field, arr)
    if field.dtype is not None:
        want = dtype_named(field.dtype)
        if arr.dtype != want:
            if want.kind in "US" and arr.dtype.kind in "US":
                arr = arr.astype(want.kind)
            elif arr.dtype.kind in "US" or want.kind in "US" or not np.can_cast(
                    arr.dtype, want, casting="same_kind") or (
                    want == BFLOAT16 and arr.dtype.kind not in "biuf"):
                raise InvalidInput(field.name, f"dtype {arr.dtype} cannot be used as {want}")
            else:
                arr = _narrow(field, arr, want)
    elif arr.dtype.kind not in "biufcUSO" and arr.dtype != BFLOAT16:
        raise InvalidInput(field.name, f"dtype {arr.dtype} is not supported")
    _check_shape(field, arr.shape)
    return arr


def coerce_value(field: Field, value: Any) -> Any:
    """Validate one input value against its field; return it in the form the endpoint takes."""
    if field.kind == "tensor":
        return coerce_tensor(field, value)
    if field.kind == "any":
        return value
    if isinstance(value, np.generic):
        value = value.item()
    types = _PY_TYPES[field.kind]
    if not isinstance(value, types) or (field.kind in ("int", "float") and isinstance(value, bool)):
        raise InvalidInput(field.name, f"expected {field.kind}, got {type(value).__name__}")
    if field.kind == "float":
        value = float(cast(float, value))
        if not math.isfinite(value):
            raise InvalidInput(field.name, "must be a finite number")
    return list(value) if field.kind == "list" else value


def validate_inputs(fields: Sequence[Field], values: Any) -> dict[str, Any]:
    """Check a request's inputs against the schema; raise :class:`InvalidInput` with the reason."""
    if not isinstance(values, dict):
        raise InvalidInput("(body)", f"expected an object of named inputs, got "
                                     f"{type(values).__name__}")
    known = {f.name for f in fields}
    for name in values:
        if name not in known:
            raise InvalidInput(str(name), f"unknown input; expected {sorted(known)}")
    out = {}
    for field in fields:
        if field.name not in values:
            if field.required:
                raise InvalidInput(field.name, "missing")
            continue
        out[field.name] = coerce_value(field, values[field.name])
    return out


def check_outputs(fields: Sequence[Field], value: Any) -> None:
    """Check an endpoint's answer against its declared named outputs (none declared: nothing
    to check): a dict with exactly those names, each tensor a numpy array of the declared dtype
    and shape (-1: any size), each other kind of the declared Python type. Raises
    :class:`InvalidOutput` naming the first output that does not match."""
    if not fields:
        return
    names = [f.name for f in fields]
    if not isinstance(value, dict):
        raise InvalidOutput(f"the endpoint must return a dict of its declared outputs {names}, "
                            f"not {type(value).__name__}")
    for extra in value:
        if extra not in names:
            raise InvalidOutput(f"output '{extra}' is not declared; the declared outputs are "
                                f"{names}")
    for field in fields:
        if field.name not in value:
            raise InvalidOutput(f"output '{field.name}' is missing from the endpoint's answer")
        reason = _output_mismatch(field, value[field.name])
        if reason is not None:
            raise InvalidOutput(f"output '{field.name}': {reason}")


def _output_mismatch(field: Field, value: Any) -> str | None:
    if field.kind == "tensor":
        if not isinstance(value, np.ndarray):
            return f"expected a numpy array, got {type(value).__name__}"
        if field.dtype is not None and value.dtype != dtype_named(field.dtype):
            return f"dtype {value.dtype} does not match the declared {dtype_named(field.dtype)}"
        return _shape_mismatch(field, value.shape)
    if field.kind == "any":
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, _PY_TYPES[field.kind]) or (
            field.kind in ("int", "float") and isinstance(value, bool)):
        return f"expected {field.kind}, got {type(value).__name__}"
    return None


_HINT_KINDS = {int: "int", float: "float", str: "str", bool: "bool", list: "list",
               dict: "dict", np.ndarray: "tensor"}


def field_from_hint(name: str, hint: Any, required: bool) -> Field:
    """The :class:`Field` that a parameter's (or a return value's) type hint declares."""
    if isinstance(hint, Tensor):
        return Field(name, "tensor", hint.dtype, hint.shape, required)
    if typing.get_origin(hint) is typing.Annotated:
        base, *extras = typing.get_args(hint)
        for extra in extras:
            if isinstance(extra, Tensor):
                return Field(name, "tensor", extra.dtype,
                             None if extra.shape is None else tuple(
                                 -1 if d is None else int(d) for d in extra.shape), required)
        hint = base
    origin = typing.get_origin(hint) or hint
    kind = _HINT_KINDS.get(origin, "any")
    return Field(name, kind, None, None, required)
