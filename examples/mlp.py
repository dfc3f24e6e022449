"""The `mlp` reference model: float32 [n, 64] -> float32 [n, 10], microseconds per call.

    zeroserve serve examples/mlp.py:MLP
    curl -s localhost:8000/mlp/predict -H 'content-type: application/json' \
         -d '{"x": [[0.1, 0.2, ... 64 floats]]}'
"""
from typing import Annotated

import numpy as np
from reference_models import mlp

import zeroserve


@zeroserve.service(name="mlp")
class MLP:
    @zeroserve.api
    def predict(
        self, x: Annotated[np.ndarray, zeroserve.Tensor("float32", (-1, 64))]
    ) -> Annotated[np.ndarray, zeroserve.Tensor("float32", (-1, 10))]:
        return mlp(x)
