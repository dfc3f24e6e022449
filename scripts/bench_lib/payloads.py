"""Request and answer bodies, computed from the reference models the served examples wrap."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np


@dataclass(frozen=True)
class Payload:
    """One model's request body and the answer it should get, both JSON bytes.

    ``answer`` is formatted as the gateway formats it (``json.dumps`` of the
    nested list), so the echo baseline sends the same bytes the cluster does.
    """

    model: str
    request: bytes
    answer: bytes
    expected: np.ndarray


def load_reference_models(path: Path) -> ModuleType:
    """Import ``examples/reference_models.py`` (a copy of shared/bench/models.py) by path."""
    spec = importlib.util.spec_from_file_location("reference_models", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load reference models from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_payload(models: ModuleType, model: str) -> Payload:
    """The single-row request (``sample_input(1)``) for ``model`` and its answer."""
    x = models.sample_input(1)
    y = getattr(models, model)(x)
    request = json.dumps({"x": x.tolist()}).encode()
    answer = json.dumps(y.tolist()).encode()
    return Payload(model, request, answer, y)


def answer_matches(payload: Payload, body: bytes) -> bool:
    """Whether ``body`` (a JSON answer) equals the expected output within float32 rounding."""
    try:
        got = np.asarray(json.loads(body), dtype=np.float32)
    except (ValueError, TypeError):
        return False
    return got.shape == payload.expected.shape and bool(
        np.allclose(got, payload.expected, rtol=1e-4, atol=1e-5))
