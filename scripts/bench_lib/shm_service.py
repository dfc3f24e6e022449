"""The service of the shared memory benchmark (``bench_lib.shm_bench``): the sum of a large
FP32 vector, so that the answer is small and the input's way in is what is measured."""
from typing import Annotated

import numpy as np

import zeroserve
from zeroserve import Tensor


@zeroserve.service(name="vector")
class Vector:
    @zeroserve.api
    def total(self, x: Annotated[np.ndarray, Tensor("float32", (-1,))]) -> np.ndarray:
        return np.array([x.sum(dtype=np.float64)], np.float64)
