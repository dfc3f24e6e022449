"""The OIP inference flow shared by HTTP and gRPC, with a broker link that answers at once."""
from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from gateway.errors import RequestFailed
from gateway.oip_infer import infer
from gateway.oip_models import ModelRef
from gateway.oip_rest_body import InferRequest
from zeroserve.schema import Field, InvalidInput
from zeroserve.wire import codec
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import Status
from zeroserve.wire.frontend import Reply
from zeroserve.wire.oip_tensors import TensorError

INFO = EndpointDescription("mlp", "predict", (Field("x", "tensor", "float32", (-1, 4)),),
                           Field("output", "tensor", "float32", (-1, 4)), False, 1, 0)
REF = ModelRef("mlp", "mlp", "predict")


class _Link:
    """Answers every request with ``answer`` and remembers the timeouts it was given (the
    one method of :class:`gateway.broker_link.BrokerLink` the flow uses)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.timeouts: list[float] = []

    async def request(self, endpoint: EndpointDescription, timeout_s: float, meta: bytes,
                      body: list, rows: int = 1, batch_key: bytes = b"", stages: bool = False
                      ) -> Reply:
        self.timeouts.append(timeout_s)
        meta, frames = codec.encode(self.answer)
        return Reply(b"id", Status.OK, meta, frames)


class _Format:
    """Inputs given as arrays, a deadline of the request's parameter or 7 s, outputs as is."""

    def __init__(self, inputs: dict[str, np.ndarray], timeout_us: int | None = None,
                 outputs: dict[str, bool | None] | None = None) -> None:
        self.request = InferRequest("r1", {k: ("FP32", v) for k, v in inputs.items()},
                                    outputs or {}, timeout_us=timeout_us)

    def parse(self) -> InferRequest:
        return self.request

    def deadline_s(self, requested_us: int | None) -> float:
        return 7.0 if requested_us is None else requested_us / 1e6

    def encode(self, model: str, request: InferRequest,
               outputs: list[tuple[str, np.ndarray]]) -> tuple[str, list[str]]:
        return model, [name for name, _ in outputs]


def _infer(link: _Link, body: _Format) -> Any:
    return asyncio.run(infer(link, REF, INFO, body))  # type: ignore[arg-type]


X = np.zeros((1, 4), np.float32)


def test_an_inference_calls_the_endpoint_with_the_formats_deadline_and_encodes_its_answer():
    link = _Link({"output": X, "extra": X})
    assert _infer(link, _Format({"x": X})) == ("mlp", ["output", "extra"])
    assert _infer(link, _Format({"x": X}, timeout_us=250_000,
                                outputs={"extra": None})) == ("mlp", ["extra"])
    assert link.timeouts == [7.0, 0.25]


def test_a_bad_request_is_the_callers_error_and_a_bad_answer_the_endpoints():
    with pytest.raises(TensorError, match="no input 'y'"):
        _infer(_Link(X), _Format({"y": X}))
    with pytest.raises(TensorError, match="unknown output 'nope'"):
        _infer(_Link(X), _Format({"x": X}, outputs={"nope": None}))
    with pytest.raises(RequestFailed) as info:
        _infer(_Link([{"not": "a tensor"}]), _Format({"x": X}))
    assert info.value.status is Status.USER_ERROR and "output 'output'" in str(info.value)


def test_inputs_that_break_the_schema_never_reach_the_broker():
    link = _Link(X)
    with pytest.raises(InvalidInput, match="x"):
        _infer(link, _Format({"x": np.zeros((1, 5), np.float32)}))
    assert link.timeouts == []
