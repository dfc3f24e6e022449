"""Two versions of one service, ``ranker``, for the version tests: each version its own
schema and outputs, and a cheap ``which`` endpoint that answers its version."""
from __future__ import annotations

from typing import Annotated

import numpy as np

import zeroserve
from zeroserve import Tensor


@zeroserve.service(name="ranker", version=1)
class RankerV1:
    """Version 1: ``score`` takes INT32 rows of 4 and answers OUTPUT0 = INPUT0 + 1."""

    @zeroserve.api(outputs={"OUTPUT0": Tensor("int32", (-1, 4))})
    def score(self, INPUT0: Annotated[np.ndarray, Tensor("int32", (-1, 4))]) -> dict:
        return {"OUTPUT0": INPUT0 + 1}

    @zeroserve.api
    def which(self) -> int:
        return 1


@zeroserve.service(name="ranker", version=2)
class RankerV2:
    """Version 2: ``score`` takes FP32 rows of 8 and answers OUTPUT0 = 2 INPUT0 and OUTPUT1 =
    the rows' sums."""

    @zeroserve.api(outputs={"OUTPUT0": Tensor("float32", (-1, 8)),
                            "OUTPUT1": Tensor("float32", (-1,))})
    def score(self, INPUT0: Annotated[np.ndarray, Tensor("float32", (-1, 8))]) -> dict:
        return {"OUTPUT0": INPUT0 * 2, "OUTPUT1": INPUT0.sum(axis=1)}

    @zeroserve.api
    def which(self) -> int:
        return 2
