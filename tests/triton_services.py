"""Services that the Triton drop-in tests load into real workers (statistics, declared
outputs)."""
from __future__ import annotations

from typing import Annotated

import numpy as np

import zeroserve
from zeroserve import Tensor

Rows16 = Annotated[np.ndarray, Tensor("int32", (-1, 16))]


@zeroserve.service(name="tri")
class TritonModels:
    """``tri`` (= ``tri.add_sub``) is Triton's ``simple`` model: OUTPUT0 = INPUT0 + INPUT1,
    OUTPUT1 = INPUT0 - INPUT1, batching."""

    @zeroserve.api(batchable=True, max_batch_size=8, max_latency_ms=20)
    def add_sub(self, INPUT0: Rows16, INPUT1: Rows16) -> np.ndarray:
        return INPUT0 + INPUT1
