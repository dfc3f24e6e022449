"""The service that the shared memory tests load into real workers: it says whether its input
array maps the caller's shared memory object (read in place) or holds bytes that came through
the broker (copied)."""
from __future__ import annotations

import mmap
from typing import Annotated

import numpy as np

import zeroserve
from zeroserve import Tensor

PROBE_OUTPUTS = {"twice": Tensor("float32", (-1, 4)), "mapped": Tensor("bool", (1,))}


def maps_shared_memory(arr: np.ndarray) -> bool:
    """Whether ``arr``'s memory is a mapping (the bottom of its chain of bases is an mmap)."""
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


@zeroserve.service(name="probe")
class Probe:
    """``probe.run``: twice its FP32 input, and whether the input arrived mapped."""

    @zeroserve.api(outputs=PROBE_OUTPUTS)
    def run(self, x: Annotated[np.ndarray, Tensor("float32", (-1, 4))]) -> dict:
        return {"twice": x * 2, "mapped": np.array([maps_shared_memory(x)])}
