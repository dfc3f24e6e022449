"""A service with a durable job: score a large file of rows in chunks, reporting progress.

    zeroserve serve examples/reports.py:Reports
    curl -s localhost:8000/v1/jobs -H 'content-type: application/json' \
         -d '{"service": "reports", "endpoint": "score_file", "inputs": {"rows": [[1, 2, 3]]}}'
    curl -s localhost:8000/v1/jobs/JOB_ID            # state, attempts, progress
    curl -s localhost:8000/v1/jobs/JOB_ID/result

``summary`` is an ordinary real-time endpoint of the same service, so one worker
answers calls while its job lane runs jobs in child processes.
"""
from typing import Annotated

import numpy as np

import zeroserve

Rows = Annotated[np.ndarray, zeroserve.Tensor("float32", (-1, -1))]


@zeroserve.service(name="reports")
class Reports:
    def __init__(self) -> None:
        self.weights = np.linspace(-1.0, 1.0, 1024, dtype=np.float32)

    def _score(self, rows: np.ndarray) -> np.ndarray:
        return rows @ self.weights[: rows.shape[1]]

    @zeroserve.task(timeout_s=600, max_attempts=3)
    def score_file(self, rows: Rows, ctx: zeroserve.JobContext, chunk_rows: int = 256) -> dict:
        """Score every row; progress after each chunk; stops early when cancelled."""
        scores = []
        chunks = max(1, -(-len(rows) // chunk_rows))
        for i in range(chunks):
            if ctx.cancelled:
                return {"rows": 0, "cancelled": True}
            scores.append(self._score(rows[i * chunk_rows:(i + 1) * chunk_rows]))
            ctx.progress((i + 1) / chunks)
        total = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        return {"rows": int(total.size), "mean": float(total.mean()) if total.size else 0.0,
                "max": float(total.max()) if total.size else 0.0}

    @zeroserve.api
    def summary(self, rows: Rows) -> dict:
        """The same score as a real-time call, for a few rows."""
        scores = self._score(rows)
        return {"rows": int(scores.size), "mean": float(scores.mean()) if scores.size else 0.0}
