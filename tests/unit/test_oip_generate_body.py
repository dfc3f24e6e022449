"""Triton's generate extension bodies (gateway.oip_generate_body): pure."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.oip_generate_body import generate_inputs, generate_response, joined
from zeroserve.schema import Field
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.oip_tensors import TensorError

INFO = EndpointDescription("chat", "generate", (Field("text_input", "str"),
                                                Field("max_tokens", "int", required=False)))


def _text(value: str) -> np.ndarray:
    return np.array([value], dtype=object)


def test_keys_are_inputs_and_parameters_naming_inputs_are_inputs_too() -> None:
    assert generate_inputs({"text_input": "hi", "parameters": {"max_tokens": 4, "stream": True}},
                           INFO) == {"text_input": "hi", "max_tokens": 4}


@pytest.mark.parametrize("doc", [[], {"text_input": "x", "parameters": []},
                                 {"max_tokens": 1, "parameters": {"max_tokens": 2}}])
def test_bad_generate_requests_are_refused(doc: object) -> None:
    with pytest.raises(TensorError):
        generate_inputs(doc, INFO)


def test_a_response_has_the_model_and_each_output_bare_or_flat() -> None:
    doc = generate_response("chat", [("text_output", _text("hi")),
                                     ("scores", np.arange(4, dtype=np.float32).reshape(2, 2))])
    assert doc == {"model_name": "chat", "model_version": "1", "text_output": "hi",
                   "scores": [0.0, 1.0, 2.0, 3.0]}


def test_text_chunks_join_into_one_response() -> None:
    chunks = [[("output", _text(t))] for t in ("He", "llo", "!")]
    assert generate_response("m", joined(chunks))["output"] == "Hello!"
    one = [[("output", np.arange(3))]]
    assert joined(one) == one[0]


@pytest.mark.parametrize("chunks", [
    [],
    [[("output", np.arange(2))], [("output", np.arange(2))]],
    [[("a", _text("x"))], [("b", _text("y"))]],
])
def test_chunks_that_cannot_join_get_tritons_message(chunks: list) -> None:
    with pytest.raises(TensorError, match="generate expects the model to produce exactly 1"):
        joined(chunks)
