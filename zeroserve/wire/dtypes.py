"""numpy dtypes by name, bfloat16 included.

bfloat16 is ``ml_dtypes.bfloat16``, the field's standard for bf16 in numpy (and
what tritonclient uses). numpy knows it once ml_dtypes is imported, but not by
name (``np.dtype("bfloat16")`` fails) and its ``dtype.str`` is the anonymous
``'<V2'``. Code that names dtypes (declared schemas, the wire codec) goes
through :func:`dtype_named` and :func:`name_of`.
"""
from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
_NAMED = {"bfloat16": BFLOAT16}


def dtype_named(name: Any) -> np.dtype:
    """The dtype ``name`` stands for: whatever ``np.dtype`` takes, or ``"bfloat16"``.

    Raises ``TypeError`` for a name that is no dtype."""
    named = _NAMED.get(name) if isinstance(name, str) else None
    return named if named is not None else np.dtype(name)


def name_of(dtype: np.dtype) -> str:
    """The name that :func:`dtype_named` reads back: ``"bfloat16"``, else ``dtype.str``."""
    return "bfloat16" if dtype == BFLOAT16 else dtype.str


def is_float(dtype: np.dtype) -> bool:
    """Whether ``dtype`` holds floating-point numbers: numpy's floats and bfloat16."""
    return dtype.kind == "f" or dtype == BFLOAT16
