"""The service of the shared memory benchmark (``bench_lib.shm_bench``): the sum of a large
FP32 vector, so that the answer is small and the input's way in is what is measured; and
whether an input was read from the caller's shared memory by the worker itself (the benchmark
checks which path each server took)."""
from typing import Annotated

import numpy as np

import zeroserve
from zeroserve import Tensor

Vector1D = Annotated[np.ndarray, Tensor("float32", (-1,))]


@zeroserve.service(name="vector")
class Vector:
    @zeroserve.api
    def total(self, x: Vector1D) -> np.ndarray:
        return np.array([x.sum(dtype=np.float64)], np.float64)

    @zeroserve.api
    def in_place(self, x: Vector1D) -> np.ndarray:
        base = x  # an array of the worker's own, not a view of a message's bytes
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        return np.array([isinstance(base, np.ndarray)])
