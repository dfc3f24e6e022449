"""Services that the Open Inference Protocol tests load into real workers."""
from __future__ import annotations

from typing import Annotated

import ml_dtypes
import numpy as np

import zeroserve

Rows = Annotated[np.ndarray, zeroserve.Tensor("float32", (-1, 4))]
HalfRows = Annotated[np.ndarray, zeroserve.Tensor("bfloat16", (-1, 4))]


@zeroserve.service(name="oip")
class OipModels:
    """``oip`` (= ``oip.echo``) returns any tensor unchanged; the others check the contract."""

    @zeroserve.api
    def echo(self, x: np.ndarray) -> np.ndarray:
        return x

    @zeroserve.api(batchable=True, max_batch_size=16, max_latency_ms=5)
    def double(self, x: Rows) -> Rows:
        return x * 2

    @zeroserve.api
    def describe(self, values: Annotated[np.ndarray, zeroserve.Tensor("int32", (-1,))],
                 label: str) -> dict:
        return {"total": np.array([values.sum()], dtype=np.int64),
                "label": np.array([label.upper()], dtype=object)}

    @zeroserve.api
    def broken(self, x: np.ndarray) -> np.ndarray:
        raise RuntimeError("the model failed on purpose")

    @zeroserve.api
    def bf16(self, x: HalfRows) -> HalfRows:
        """Doubles a bfloat16 tensor (exact while finite), in bfloat16: the worker must get
        an ``ml_dtypes.bfloat16`` array, not its bytes or float32."""
        if x.dtype != ml_dtypes.bfloat16:
            raise TypeError(f"expected a bfloat16 array, got {x.dtype}")
        return (x.astype(np.float32) * 2).astype(ml_dtypes.bfloat16)


@zeroserve.service(name="fuzz")
class FuzzTarget:
    """Every kind of input, and answers that stay finite whatever comes in: a target for
    fuzzing the gateway, where any 5xx is the gateway's fault."""

    @zeroserve.api(batchable=True, max_batch_size=8, max_latency_ms=2)
    def score(self, x: Rows) -> Rows:
        return np.tanh(np.nan_to_num(x)).astype(np.float32)

    @zeroserve.api
    def mixed(self, count: int, ratio: float, name: str, on: bool, items: list,
              options: dict, anything=None) -> dict:
        return {"count": count % 1000, "name": name[:16], "on": on, "items": len(items),
                "options": sorted(options)[:4], "finite": bool(np.isfinite(ratio))}
