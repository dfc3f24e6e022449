"""Adaptive batching: the per-endpoint waiting queue, the pure batching policy,
and the numpy helpers that merge requests into one batch and split the result."""
