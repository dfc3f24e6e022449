"""The service that the shared memory tests load into real workers: it says whether its input
array was read from the caller's shared memory object by the worker itself (in place) or holds
bytes that came through the broker (copied)."""
from __future__ import annotations

from typing import Annotated

import numpy as np

import zeroserve
from zeroserve import Tensor

PROBE_OUTPUTS = {"twice": Tensor("float32", (-1, 4)), "in_place": Tensor("bool", (1,))}


def read_in_place(arr: np.ndarray) -> bool:
    """Whether ``arr``'s memory is an array of the worker's own (read from shared memory)
    rather than a view of the bytes of a message (copied through the broker)."""
    base = arr
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return isinstance(base, np.ndarray)


@zeroserve.service(name="probe")
class Probe:
    """``probe.run``: twice its FP32 input, and whether the input was read in place."""

    @zeroserve.api(outputs=PROBE_OUTPUTS)
    def run(self, x: Annotated[np.ndarray, Tensor("float32", (-1, 4))]) -> dict:
        return {"twice": x * 2, "in_place": np.array([read_in_place(x)])}
