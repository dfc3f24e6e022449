"""Named outputs declared with ``@zeroserve.api(outputs={...})``: the description, the OIP
metadata and config, and the worker's check of each answer."""
from __future__ import annotations

import numpy as np
import pytest

import zeroserve
from gateway.oip_models import ModelRef, config, endpoint_outputs, metadata
from zeroserve import Tensor
from zeroserve.schema import Field, InvalidOutput, check_outputs
from zeroserve.service import service_spec
from zeroserve.wire.descriptions import EndpointDescription

PAIR = {"OUTPUT0": Tensor("int32", (-1, 16)), "OUTPUT1": Tensor("float32", (-1, 2))}


@zeroserve.service(name="pair")
class Pair:
    @zeroserve.api(batchable=True, max_batch_size=4, outputs=PAIR)
    def run(self, x: np.ndarray) -> dict:
        return {}

    @zeroserve.api(outputs=Tensor("int32", (2,)))
    def single(self, x: np.ndarray) -> np.ndarray:
        return x


def _described(name: str = "run") -> EndpointDescription:
    return service_spec(Pair).describe()[name]


def test_named_outputs_travel_in_the_endpoint_description() -> None:
    info = _described()
    assert [(f.name, f.dtype, f.shape) for f in info.outputs] == [
        ("OUTPUT0", "int32", (-1, 16)), ("OUTPUT1", "float32", (-1, 2))]
    assert info.output.kind == "dict"
    again = EndpointDescription.from_map("pair", "run", info.to_map())
    assert again == info
    assert EndpointDescription.from_map("pair", "run", {}).outputs == ()


def test_a_single_declared_output_keeps_working() -> None:
    info = _described("single")
    assert info.outputs == () and (info.output.kind, info.output.dtype) == ("tensor", "int32")
    assert metadata(ModelRef("pair.single", "pair", "single"), info)["outputs"] == [
        {"name": "output", "datatype": "INT32", "shape": [2]}]


def test_metadata_and_config_list_every_named_output() -> None:
    info = _described()
    ref = ModelRef("pair", "pair", "run")
    assert metadata(ref, info)["outputs"] == [
        {"name": "OUTPUT0", "datatype": "INT32", "shape": [-1, 16]},
        {"name": "OUTPUT1", "datatype": "FP32", "shape": [-1, 2]}]
    assert config(ref, info)["output"] == [
        {"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [16]},
        {"name": "OUTPUT1", "data_type": "TYPE_FP32", "dims": [2]}]


def test_answers_come_out_in_the_declared_order() -> None:
    answer = {"OUTPUT1": np.zeros((1, 2), np.float32), "OUTPUT0": np.zeros((1, 16), np.int32)}
    assert [name for name, _ in endpoint_outputs(_described(), answer)] == ["OUTPUT0",
                                                                            "OUTPUT1"]


FIELDS = [Field("OUTPUT0", "tensor", "int32", (-1, 16)), Field("score", "float")]


def test_an_answer_matching_the_declaration_passes() -> None:
    check_outputs(FIELDS, {"OUTPUT0": np.zeros((3, 16), np.int32), "score": 0.5})
    check_outputs([], np.zeros(3))  # nothing declared: nothing checked


@pytest.mark.parametrize(("answer", "message"), [
    (np.zeros((1, 16), np.int32), "must return a dict of its declared outputs"),
    ({"OUTPUT0": np.zeros((1, 16), np.int32)}, "output 'score' is missing"),
    ({"OUTPUT0": np.zeros((1, 16), np.int32), "score": 1.0, "extra": 1},
     "output 'extra' is not declared"),
    ({"OUTPUT0": np.zeros((1, 16), np.int64), "score": 1.0},
     "output 'OUTPUT0': dtype int64 does not match the declared int32"),
    ({"OUTPUT0": np.zeros((1, 15), np.int32), "score": 1.0},
     "output 'OUTPUT0': shape [1, 15] does not match [-1, 16]"),
    ({"OUTPUT0": [[0] * 16], "score": 1.0}, "output 'OUTPUT0': expected a numpy array"),
    ({"OUTPUT0": np.zeros((1, 16), np.int32), "score": "high"},
     "output 'score': expected float, got str"),
])
def test_an_answer_outside_the_declaration_names_the_output(answer, message: str) -> None:
    with pytest.raises(InvalidOutput) as info:
        check_outputs(FIELDS, answer)
    assert message in str(info.value)


def test_a_streaming_endpoint_cannot_declare_named_outputs() -> None:
    with pytest.raises(TypeError, match="named outputs"):
        @zeroserve.service(name="bad")
        class Bad:
            @zeroserve.api(outputs=PAIR)
            def gen(self, x: np.ndarray):
                yield x


def test_the_worker_answers_outside_the_declaration_with_a_user_error() -> None:
    import asyncio

    from worker.runner import BatchRunner
    from zeroserve.wire import codec
    from zeroserve.wire.backend import Batch, BatchItem
    from zeroserve.wire.envelope import Status, unpack_map

    @zeroserve.service(name="liar")
    class Liar:
        @zeroserve.api(batchable=True, outputs={"OUTPUT0": Tensor("int32", (-1, 2))})
        def run(self, x: np.ndarray) -> dict:
            return {"OUTPUT0": x.astype(np.int32) if x.sum() else x}

    async def threads(fn):
        return fn()

    runner = BatchRunner(service_spec(Liar), Liar(), threads)

    def run(*arrays: np.ndarray) -> list:
        items = []
        for n, arr in enumerate(arrays):
            meta, body = codec.encode({"x": arr})
            items.append(BatchItem(bytes([n]), 1000, [meta, *body]))
        return asyncio.run(runner.run(Batch(1, "run", items))).items

    good = run(np.ones((1, 2)), np.ones((2, 2)))  # merged into one call
    assert [it.status for it in good] == [Status.OK, Status.OK]
    (bad,) = run(np.zeros((1, 2)))
    assert bad.status is Status.USER_ERROR
    assert unpack_map(bad.frames[0], "error")["error"] == (
        "output 'OUTPUT0': dtype float64 does not match the declared int32")
