"""The gateway's JSON rules: depth pre-scan, non-finite numbers in and out."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.json_body import JsonBodyError, dump_json, json_depth_exceeds, parse_json


@pytest.mark.parametrize("body, depth", [
    (b"1", 0), (b"[]", 1), (b'{"a": [[1], {"b": []}]}', 4), (b"[[[]]][[]]", 3),
    (b'["[[[[", "\\"[[[["]', 1), (b'{"k[[": "]]]]]]"}', 1),
])
def test_depth_is_counted_outside_strings(body: bytes, depth: int) -> None:
    assert not json_depth_exceeds(body, depth)
    assert json_depth_exceeds(body, depth - 1) or depth == 0


def test_depth_scan_is_chunked_and_carries_the_depth_across_chunks() -> None:
    body = b"[" * 40 + b"[]" * (3 << 21) + b"[" * 30 + b"]" * 70
    assert json_depth_exceeds(body, 69) and not json_depth_exceeds(body, 70)


def test_deep_body_is_refused_before_parsing() -> None:
    with pytest.raises(JsonBodyError, match="body is nested too deeply: more than 64"):
        parse_json(b"[" * 100_000 + b"]" * 100_000)
    assert parse_json(b"[" * 64 + b"]" * 64, 64) is not None


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_input_names_its_place(token: str) -> None:
    with pytest.raises(JsonBodyError) as refused:
        parse_json(f'{{"x": [[1, 2], [3, {token}]]}}'.encode())
    assert str(refused.value).startswith(f"x[1][1] is {token}: ")
    assert "msgpack" in str(refused.value)
    with pytest.raises(JsonBodyError, match=r"inputs\[0: 'a'\]\.data\[0\] is NaN"):
        parse_json(b'{"inputs": [{"name": "a", "data": [NaN]}]}')


def test_invalid_json_is_a_json_body_error() -> None:
    for body in (b"[1,", b"\xff", b""):
        with pytest.raises(JsonBodyError):
            parse_json(body)


def test_dump_writes_numpy_and_refuses_non_finite_answers_naming_the_place() -> None:
    value = {"y": np.arange(3, dtype=np.float32), "n": np.int64(2), "b": b"hi"}
    assert json.loads(dump_json(value)) == {"y": [0.0, 1.0, 2.0], "n": 2, "b": "hi"}
    with pytest.raises(JsonBodyError, match=r"the answer of s\.e holds NaN or infinity at "
                                            r"y\[1\]\[0\]"):
        dump_json({"y": np.array([[1.0], [math.inf]])}, "the answer of s.e")
    with pytest.raises(JsonBodyError, match=r"at outputs\[0: 'out'\]\.data\[1\]"):
        dump_json({"outputs": [{"name": "out", "data": [1.0, math.nan]}]})
    with pytest.raises(TypeError):
        dump_json({"x": object()})


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(_JSON_VALUES)
def test_every_body_reads_as_the_standard_parser_reads_it(value: object) -> None:
    """The fast parser's value equals json's, integers past 64 bits and floats included."""
    for body in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        parsed = parse_json(body.encode())
        assert parsed == json.loads(body)
        assert json.dumps(parsed) == json.dumps(json.loads(body))  # types too (int vs float)


@pytest.mark.parametrize("body", [
    b"[18446744073709551616]", b"[-9223372036854775809]", b'"\\ud800"', b"[1e400]",
    "[1]".encode("utf-16"), b'\xef\xbb\xbf{"a": 1}', "[\"\u00e9\"]".encode("utf-32"),
])
def test_bodies_the_fast_parser_refuses_or_misreads_read_as_json_reads_them(
        body: bytes) -> None:
    expected = json.loads(body)
    assert repr(parse_json(body)) == repr(expected)


@pytest.mark.parametrize("body", [b"[1,]", b"{'a': 1}", b"[1] x", b"", b'{"a" 1}'])
def test_malformed_bodies_keep_the_standard_parsers_message(body: bytes) -> None:
    with pytest.raises(json.JSONDecodeError) as standard:
        json.loads(body)
    with pytest.raises(JsonBodyError) as ours:
        parse_json(body)
    assert str(ours.value) == str(standard.value)
