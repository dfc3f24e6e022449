# A copy of ../shared/bench/models.py (the benchmark reference models), kept identical.
"""Reference models for every zeroserve performance figure.

Plain numpy functions, deliberately independent of any serving framework: a
service wraps them, and the same functions are wrapped the same way for the
systems we compare against.

- mlp:     float32 [n, 64] -> dense 64x256 + relu -> dense 256x10 -> float32 [n, 10].
           Costs microseconds: a benchmark on it measures the serving overhead.
- gpu_sim: float32 [n, 64] -> float32 [n, 10], after sleeping 5 ms + 0.1 ms per row.
           Stands in for an accelerator-bound model whose fixed cost per call is
           what adaptive batching amortises. Sleeping releases the GIL, as waiting
           on a GPU does.

A single request is one row: shape [1, 64].
"""
import time

import numpy as np

_rng = np.random.default_rng(0)
W1 = _rng.standard_normal((64, 256)).astype(np.float32) / 8.0
B1 = _rng.standard_normal(256).astype(np.float32) / 8.0
W2 = _rng.standard_normal((256, 10)).astype(np.float32) / 16.0
B2 = _rng.standard_normal(10).astype(np.float32) / 16.0


def mlp(x: np.ndarray) -> np.ndarray:
    h = np.maximum(x @ W1 + B1, 0.0)
    return (h @ W2 + B2).astype(np.float32)


def gpu_sim(x: np.ndarray) -> np.ndarray:
    time.sleep(0.005 + 0.0001 * x.shape[0])
    return (x[:, :10] * 2.0).astype(np.float32)


def sample_input(rows: int = 1, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32)
