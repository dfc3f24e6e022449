"""Input validation against an endpoint's schema, and schemas from type hints."""
from typing import Annotated

import ml_dtypes
import numpy as np
import pytest

import zeroserve
from zeroserve.schema import Field, InvalidInput, validate_inputs
from zeroserve.service import service_spec

X = Field("x", "tensor", "float32", (-1, 4))


def test_json_lists_become_arrays_of_the_declared_dtype():
    out = validate_inputs([X], {"x": [[1, 2, 3, 4]]})
    assert out["x"].dtype == np.float32 and out["x"].shape == (1, 4)


def test_bfloat16_field_takes_bfloat16_arrays_and_json_numbers():
    half = Field("h", "tensor", "bfloat16", (-1,))
    arr = np.array([1.5, -2.0], ml_dtypes.bfloat16)
    assert validate_inputs([half], {"h": arr})["h"] is arr
    out = validate_inputs([half], {"h": [1.5, 3]})["h"]
    assert out.dtype == ml_dtypes.bfloat16 and out.tolist() == [1.5, 3.0]
    with pytest.raises(InvalidInput, match="out of the range"):
        validate_inputs([half], {"h": [1e300]})
    with pytest.raises(InvalidInput, match="cannot be used as bfloat16"):
        validate_inputs([half], {"h": np.array([1 + 2j])})
    untyped = Field("x", "tensor")
    assert validate_inputs([untyped], {"x": arr})["x"] is arr


@pytest.mark.parametrize("value, reason", [
    ([[1, 2, 3]], "shape"),
    ([[1, 2], [3]], "rectangular"),
    ([["a", "b", "c", "d"]], "dtype"),
    ("x", "expected an array"),
])
def test_bad_tensor_names_the_input_and_the_reason(value, reason):
    with pytest.raises(InvalidInput, match=reason) as err:
        validate_inputs([X], {"x": value})
    assert err.value.name == "x"


def test_float_cannot_be_narrowed_to_int():
    with pytest.raises(InvalidInput, match="dtype"):
        validate_inputs([Field("n", "tensor", "int32", None)], {"n": [1.5]})


def test_missing_and_unknown_inputs_are_reported():
    with pytest.raises(InvalidInput, match="missing"):
        validate_inputs([X], {})
    with pytest.raises(InvalidInput, match="unknown input"):
        validate_inputs([X], {"x": [[1, 2, 3, 4]], "y": 1})


def test_scalars_are_checked():
    fields = [Field("n", "int"), Field("s", "str"), Field("f", "float", required=False)]
    assert validate_inputs(fields, {"n": 3, "s": "a", "f": 2}) == {"n": 3, "s": "a", "f": 2.0}
    with pytest.raises(InvalidInput, match="expected int"):
        validate_inputs(fields, {"n": True, "s": "a"})


def test_schema_comes_from_type_hints():
    @zeroserve.service(name="s")
    class S:
        @zeroserve.api(batchable=True, max_batch_size=8)
        def run(self, x: Annotated[np.ndarray, zeroserve.Tensor("float32", (None, 3))],
                k: int = 1) -> dict:
            return {}

        @zeroserve.api(name="other")
        async def go(self, text: str) -> str:
            return text

    spec = service_spec(S)
    run = spec.describe()["run"].to_map()
    assert run["inputs"][0] == {"name": "x", "kind": "tensor", "dtype": "float32",
                                "shape": [-1, 3], "required": True}
    assert run["inputs"][1]["required"] is False and run["max_batch_size"] == 8
    assert spec.endpoints["other"].is_async and spec.endpoints["other"].method == "go"
