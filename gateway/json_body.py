"""The gateway's JSON rules for request and answer bodies, in one place.

Reading (:func:`parse_json`): a body nested deeper than ``max_depth`` arrays and
objects is refused before :func:`json.loads` sees it, so that no parser or
later walk over the value can recurse without bound; and ``NaN``,
``Infinity`` and ``-Infinity`` (which Python's parser accepts, though JSON
has no such numbers) are refused with the place they stand, since msgpack
and OIP binary tensors are the formats that carry non-finite values.

The depth pre-scan costs a few C-speed passes over the body: strings are cut
out with one regular expression, every byte but brackets is deleted, and the
running depth of what is left is a cumulative sum in numpy, chunk by chunk.

The value is parsed by orjson (a tenth of :mod:`json`'s time for a body of
numbers), which reads strict JSON in UTF-8 only. A body it refuses, and one
with a run of 19 digits or more (an integer past 64 bits, which orjson turns
into a float), is parsed again by :mod:`json`, whose value or error is the
answer: every body reads as :mod:`json` reads it, errors and their messages
included.

Writing (:func:`dump_json`): numpy values become lists and numbers, and a
non-finite number is refused with the place it stands instead of being
written as the ``NaN`` token no JSON client can read. orjson writes the value
(a tenth of :mod:`json`'s time for an answer of ten numbers) unless what it
wrote holds ``null`` (which is how it writes NaN) or it refuses the value;
then :mod:`json` writes it, or its error is the answer.

Both raise :class:`JsonBodyError`, a ``ValueError`` whose message says what is
wrong; a front end turns it into a 400 (or, for an answer, its own error).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import orjson

DEFAULT_MAX_DEPTH = 64

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_OPEN = ord("[")
# digits as "0", the rest as " ": a run of 19 zeros may be an integer orjson cannot hold
_DIGITS_AS_ZEROS = bytes.maketrans(bytes(range(256)), bytes(
    ord("0") if chr(b).isdigit() and b < 128 else ord(" ") for b in range(256)))
_LONG_DIGITS = b"0" * 19
_SCAN_CHUNK = 1 << 22  # brackets summed at once; bounds the scan's working memory
_NON_FINITE_HINT = ("JSON cannot carry NaN or infinity; send non-finite numbers as msgpack "
                    "(application/msgpack) or as OIP binary tensors")


class JsonBodyError(ValueError):
    """A JSON body the gateway refuses, or an answer it cannot write as JSON."""


class _NonFinite(float):
    """What the parser puts where ``NaN``/``Infinity`` stood, to find the place afterwards."""

    token = ""


def _non_finite(token: str) -> float:
    value = _NonFinite(math.nan)
    value.token = token
    return value


_DECODER = json.JSONDecoder(parse_constant=_non_finite)  # one for every body: no per-call setup


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """Whether ``body`` opens more than ``max_depth`` arrays/objects at once (strings are
    skipped; an unterminated string counts as outside a string)."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False  # too few brackets to be nested that deep (the common case, no regex)
    brackets = _STRING.sub(b"", body).translate(_AS_BRACKETS, _NOT_BRACKETS)
    if brackets.count(b"[") <= max_depth:
        return False
    depth = 0
    view = np.frombuffer(brackets, np.uint8)
    for start in range(0, len(view), _SCAN_CHUNK):
        steps = np.where(view[start:start + _SCAN_CHUNK] == _OPEN, 1, -1).astype(np.int32)
        running = np.cumsum(steps, dtype=np.int64) + depth
        if int(running.max()) > max_depth:
            return True
        depth = int(running[-1])
    return False


def parse_json(body: bytes | memoryview | str, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """The value of a JSON request body; :class:`JsonBodyError` if it is nested more than
    ``max_depth`` levels, holds a non-finite number, or is not JSON."""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    if json_depth_exceeds(raw, max_depth):
        raise JsonBodyError(f"body is nested too deeply: more than {max_depth} levels of "
                            "arrays and objects")
    if _LONG_DIGITS not in raw.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(raw)  # strict JSON: no NaN or Infinity to look for
        except orjson.JSONDecodeError:
            pass  # json's error (or its value: UTF-16, NaN, lone surrogates) is the answer
    try:
        doc = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except ValueError as exc:  # UnicodeDecodeError included
        raise JsonBodyError(str(exc)) from None
    if b"NaN" in raw or b"Infinity" in raw:  # else no constant was parsed: skip the walk
        found: list[_NonFinite] = []

        def constant(value: Any) -> bool:
            if isinstance(value, _NonFinite):
                found.append(value)
                return True
            return False

        path = _path_to(doc, constant)
        if found:
            raise JsonBodyError(f"{path or 'the body'} is {found[0].token}: {_NON_FINITE_HINT}")
    return doc


# what json cannot write goes to _json_default (and so fails alike) instead of being written
_ORJSON_AS_JSON = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _is_non_finite(value: Any) -> bool:
    if isinstance(value, (float, np.floating)):
        return not math.isfinite(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "fc":
        return not bool(np.isfinite(value).all())
    return False


def dump_json(value: Any, what: str = "the answer") -> bytes:
    """``value`` as JSON bytes (numpy arrays and scalars included). A non-finite number is a
    :class:`JsonBodyError` naming where in ``what`` it stands; a value JSON has no form for
    is a ``TypeError``."""
    try:
        written = orjson.dumps(value, default=_json_default, option=_ORJSON_AS_JSON)
    except orjson.JSONEncodeError:
        written = None  # json's error (or its value: non-string keys, huge integers) is the answer
    if written is not None and b"null" not in written:  # orjson writes NaN and infinity as null
        return written
    try:
        return json.dumps(value, default=_json_default, allow_nan=False).encode()
    except ValueError:
        path = _path_to(value, _is_non_finite)
        where = f" at {path}" if path else ""
        raise JsonBodyError(f"{what} holds NaN or infinity{where}, which JSON cannot carry; "
                            "ask for msgpack (Accept: application/msgpack) or binary outputs "
                            "(OIP: binary_data: true)") from None


def _path_to(value: Any, match: Any) -> str | None:
    """Where the first value that ``match`` accepts stands in ``value``, as ``x[0][3]``; a
    list entry that is an object with a string ``name`` is shown by that name."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if match(node):
            if isinstance(node, np.ndarray):  # the first non-finite element's index
                index = np.argwhere(~np.isfinite(node))[0]
                path += "".join(f"[{int(i)}]" for i in index)
            return path or None
        if isinstance(node, dict):
            children = [(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()]
        elif isinstance(node, (list, tuple)):
            children = [(v, f"{path}[{_entry_name(v, i)}]") for i, v in enumerate(node)]
        else:
            continue
        stack.extend(reversed(children))
    return None


def _entry_name(entry: Any, index: int) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"{index}: {name!r}" if isinstance(name, str) else str(index)
