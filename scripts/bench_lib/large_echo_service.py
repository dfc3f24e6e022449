"""The service of the large echo benchmark (``bench_lib.large_echo_bench``): an endpoint that
returns its FP32 vector unchanged, so that a call's cost is the tensor's way in and out."""
from typing import Annotated

import numpy as np

import zeroserve
from zeroserve import Tensor

Vector1D = Annotated[np.ndarray, Tensor("float32", (-1,))]


@zeroserve.service(name="echo")
class Echo:
    @zeroserve.api
    def same(self, x: Vector1D) -> Vector1D:
        return x
