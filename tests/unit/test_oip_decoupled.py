"""A streaming endpoint seen as an Open Inference Protocol model: a Triton decoupled model
whose metadata and configuration name its output (gateway.oip_models; pure)."""
from __future__ import annotations

from gateway.oip_models import ModelRef, config, metadata
from zeroserve.schema import Field
from zeroserve.wire.descriptions import EndpointDescription

REF = ModelRef("chat.tokens", "chat", "tokens")
INPUTS = (Field("prompt", "str"),)


def test_a_streaming_endpoint_is_decoupled_and_names_its_output() -> None:
    info = EndpointDescription("chat", "tokens", INPUTS, streams=True)
    cfg = config(REF, info)
    assert cfg["model_transaction_policy"] == {"decoupled": True}
    assert cfg["output"] == [{"name": "output", "data_type": "TYPE_STRING", "dims": [-1]}]
    assert metadata(REF, info)["outputs"] == [
        {"name": "output", "datatype": "BYTES", "shape": [-1]}]


def test_declared_chunks_give_their_datatype_and_other_endpoints_are_not_decoupled() -> None:
    typed = EndpointDescription("chat", "tokens", INPUTS, Field("output", "int"), streams=True)
    assert metadata(REF, typed)["outputs"] == [
        {"name": "output", "datatype": "INT64", "shape": [1]}]
    plain = EndpointDescription("chat", "tokens", INPUTS)
    assert "model_transaction_policy" not in config(REF, plain)
    assert metadata(REF, plain)["outputs"] == []  # an untyped answer: known when it comes
