"""Endpoints as OIP models: names, metadata, config and input conversion."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from gateway.oip_models import (
    ModelRef,
    config,
    endpoint_inputs,
    endpoint_outputs,
    metadata,
    model_names,
    resolve,
)
from zeroserve.schema import Field
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription
from zeroserve.wire.oip_tensors import TensorError

SERVICES = {"mlp": ServiceDescription("mlp", {"predict": EndpointDescription("mlp", "predict"),
                                             "embed": EndpointDescription("mlp", "embed")},
                                      workers=1),
            "a.b": ServiceDescription("a.b", {"run": EndpointDescription("a.b", "run")})}


def _info(batchable: bool = False, inputs: list[Field] | None = None,
          output: Field | None = None) -> EndpointDescription:
    return EndpointDescription(
        "mlp", "predict",
        tuple(inputs or [Field("x", "tensor", "float32", (-1, 64))]),
        output or Field("output", "tensor", "float32", (-1, 10)),
        batchable, 32 if batchable else 1, 0, 20.0)


def test_names_resolve_to_the_default_or_a_named_endpoint() -> None:
    assert [r.name for r in model_names(SERVICES)] == [
        "mlp", "mlp.predict", "mlp.embed", "a.b", "a.b.run"]
    assert resolve("mlp", SERVICES) == ModelRef("mlp", "mlp", "predict")
    assert resolve("mlp.embed", SERVICES) == ModelRef("mlp.embed", "mlp", "embed")
    assert resolve("a.b.run", SERVICES) == ModelRef("a.b.run", "a.b", "run")
    assert resolve("mlp.nope", SERVICES) is None
    assert resolve("nope", SERVICES) is None


def test_batching_endpoint_reports_max_batch_size_and_leading_minus_one() -> None:
    ref = ModelRef("mlp", "mlp", "predict")
    meta = metadata(ref, _info(batchable=True, inputs=[Field("x", "tensor", "float32",
                                                              (8, 64))]))
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["versions"] == ["1"] and meta["name"] == "mlp"
    assert config(ref, _info(batchable=True)) == {
        "name": "mlp", "platform": "zeroserve", "backend": "zeroserve", "max_batch_size": 32,
        "dynamic_batching": {"max_queue_delay_microseconds": 20000},
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [64]}],  # no batch dim
        "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [10]}]}
    assert config(ref, _info())["max_batch_size"] == 0


def test_bfloat16_tensors_are_bf16_in_metadata_and_type_bf16_in_config() -> None:
    half = Field("h", "tensor", "bfloat16", (-1, 8))
    info = _info(inputs=[half, Field("s", "str", required=False)],
                 output=Field("output", "tensor", "bfloat16", (-1, 8)))
    ref = ModelRef("mlp", "mlp", "predict")
    assert metadata(ref, info)["inputs"][0] == {"name": "h", "datatype": "BF16",
                                                "shape": [-1, 8]}
    cfg = config(ref, info)
    assert cfg["input"] == [{"name": "h", "data_type": "TYPE_BF16", "dims": [-1, 8]},
                            {"name": "s", "data_type": "TYPE_STRING", "dims": [1],
                             "optional": True}]
    assert cfg["output"] == [{"name": "output", "data_type": "TYPE_BF16", "dims": [-1, 8]}]
    arr = np.zeros((1, 8), ml_dtypes.bfloat16)
    assert endpoint_inputs(info, {"h": ("BF16", arr)})["h"] is arr
    with pytest.raises(TensorError, match="datatype FP32 does not match the model's BF16"):
        endpoint_inputs(info, {"h": ("FP32", np.zeros((1, 8), np.float32))})


def test_inputs_that_are_not_tensors() -> None:
    info = _info(inputs=[Field("n", "int"), Field("s", "str"), Field("d", "dict"),
                         Field("free", "any")], output=Field("output", "dict"))
    meta = metadata(ModelRef("m", "mlp", "predict"), info)
    assert [(t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("INT64", [1]), ("BYTES", [1]), ("BYTES", [-1]), ("BYTES", [-1])]
    assert meta["outputs"] == []  # a dict's names are known only when it returns
    values = endpoint_inputs(info, {
        "n": ("INT64", np.array([3])), "s": ("BYTES", np.array([b"hi"], dtype=object)),
        "d": ("BYTES", np.array([b'{"k": 1}'], dtype=object))})
    assert values == {"n": 3, "s": "hi", "d": {"k": 1}}
    assert type(values["n"]) is int


@pytest.mark.parametrize("tensors, message", [
    ({"x": ("FP64", np.zeros((1, 64)))}, "datatype FP64 does not match the model's FP32"),
    ({"y": ("FP32", np.zeros(1, np.float32))}, "has no input 'y'"),
])
def test_input_errors(tensors: dict, message: str) -> None:
    with pytest.raises(TensorError, match=message):
        endpoint_inputs(_info(), tensors)


def test_scalar_input_errors() -> None:
    info = _info(inputs=[Field("n", "int"), Field("d", "dict")])
    with pytest.raises(TensorError, match="one element"):
        endpoint_inputs(info, {"n": ("INT64", np.array([1, 2]))})
    with pytest.raises(TensorError, match="JSON object"):
        endpoint_inputs(info, {"d": ("BYTES", np.array([b"{"], dtype=object))})


def test_outputs_from_an_array_or_a_dict() -> None:
    info = _info()
    [(name, arr)] = endpoint_outputs(info, np.zeros((2, 10), np.float32))
    assert name == "output" and arr.shape == (2, 10)
    named = endpoint_outputs(info, {"probs": np.ones(3), "label": "cat"})
    assert [(n, a.tolist()) for n, a in named] == [("probs", [1.0, 1.0, 1.0]),
                                                   ("label", ["cat"])]
    with pytest.raises(TensorError, match="output 'bad'"):
        endpoint_outputs(info, {"bad": [object()]})
