"""The service of the jobs benchmark: the `mlp` reference endpoint, plus two tasks."""
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from reference_models import mlp  # noqa: E402

import zeroserve  # noqa: E402


@zeroserve.service(name="mlp")
class MLPWithJobs:
    @zeroserve.api
    def predict(
        self, x: Annotated[np.ndarray, zeroserve.Tensor("float32", (-1, 64))]
    ) -> Annotated[np.ndarray, zeroserve.Tensor("float32", (-1, 10))]:
        return mlp(x)

    @zeroserve.task(timeout_s=3600, max_attempts=1)
    def burn(self, seconds: float, ctx: zeroserve.JobContext) -> int:
        """Pure-Python CPU work (holds its process's GIL) until ``seconds`` pass or cancel."""
        end, spins = time.monotonic() + seconds, 0
        while time.monotonic() < end and not ctx.cancelled:
            for _ in range(20000):
                spins += 1
        return spins

    @zeroserve.task(timeout_s=60, max_attempts=3)
    def noop(self) -> int:
        return 0
