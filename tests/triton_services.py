"""Services that the Triton drop-in tests load into real workers (statistics, declared
outputs)."""
from __future__ import annotations

import time
from typing import Annotated

import numpy as np

import zeroserve
from zeroserve import Tensor

Rows16 = Annotated[np.ndarray, Tensor("int32", (-1, 16))]
ADD_SUB = {"OUTPUT0": Tensor("int32", (-1, 16)), "OUTPUT1": Tensor("int32", (-1, 16))}


@zeroserve.service(name="tri")
class TritonModels:
    """``tri`` (= ``tri.add_sub``) is Triton's ``simple`` model: OUTPUT0 = INPUT0 + INPUT1,
    OUTPUT1 = INPUT0 - INPUT1, batching. The others answer outside their declared outputs."""

    @zeroserve.api(batchable=True, max_batch_size=8, max_latency_ms=20, outputs=ADD_SUB)
    def add_sub(self, INPUT0: Rows16, INPUT1: Rows16) -> dict:
        time.sleep(0.002)  # so that compute_infer is never 0 ns
        return {"OUTPUT0": INPUT0 + INPUT1, "OUTPUT1": INPUT0 - INPUT1}

    @zeroserve.api(outputs=ADD_SUB)
    def wrong_dtype(self, INPUT0: Rows16, INPUT1: Rows16) -> dict:
        return {"OUTPUT0": INPUT0 + INPUT1, "OUTPUT1": (INPUT0 - INPUT1).astype(np.int64)}

    @zeroserve.api(outputs=ADD_SUB)
    def one_missing(self, INPUT0: Rows16, INPUT1: Rows16) -> dict:
        return {"OUTPUT0": INPUT0 + INPUT1}

    @zeroserve.api(outputs=Tensor("int32", (-1, 16)))
    def single(self, INPUT0: Rows16) -> np.ndarray:
        return INPUT0 * 3
