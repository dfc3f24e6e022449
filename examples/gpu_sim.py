"""The `gpu_sim` reference model: sleeps 5 ms + 0.1 ms per row, like an accelerator call.

Batching amortises the fixed 5 ms: `predict` is batchable (up to 64 rows,
waiting at most 20 ms for a batch to fill).

    zeroserve serve examples/gpu_sim.py:GpuSim
"""
from typing import Annotated

import numpy as np
from reference_models import gpu_sim

import zeroserve

Row = Annotated[np.ndarray, zeroserve.Tensor("float32", (-1, 64))]
Out = Annotated[np.ndarray, zeroserve.Tensor("float32", (-1, 10))]


@zeroserve.service(name="gpu_sim")
class GpuSim:
    @zeroserve.api(batchable=True, max_batch_size=64, max_latency_ms=20)
    def predict(self, x: Row) -> Out:
        return gpu_sim(x)

    @zeroserve.api
    def predict_unbatched(self, x: Row) -> Out:
        return gpu_sim(x)
