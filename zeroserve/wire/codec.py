"""The tensor codec: Python values with numpy arrays <-> one msgpack frame + raw frames.

``encode(value)`` returns ``(meta, frames)``. ``meta`` is msgpack; numpy arrays
of at least :data:`FRAME_THRESHOLD` bytes travel as their own frames, which are
views of the array's memory (no copy: send them with ``copy=False`` and keep
the array alive until sent). Smaller arrays are inlined in ``meta``.

``encode_parts(value)`` is the same value with every array inline, as the parts of one
buffer; an array of at least 64 KiB is a part of its own, a view of its memory (write the
parts in order, then let the array go).

``decode(meta, frames)`` rebuilds the value; arrays that arrived in frames are
read-only views of those frames (``np.frombuffer``), not copies.

Supported: None, bool, int, float, str, bytes, list, tuple (as list), dict,
numpy scalars (as Python scalars) and arrays of every numeric dtype, bool,
float16, bfloat16 (``ml_dtypes.bfloat16``), fixed-width bytes (``S``) and
strings (``U`` or object arrays of str). An array header names its dtype by
``dtype.str`` (``'<f4'``), except bfloat16, whose ``dtype.str`` is the
anonymous ``'<V2'``: it is named ``"bfloat16"``. Anything else raises
:class:`CodecError`; nothing is ever unpickled. A tensor in shared memory (a
:class:`~zeroserve.wire.shm_refs.ShmTensor`) travels as a reference to it, which only a process
that accepts references opens (:mod:`zeroserve.wire.shm_refs`).
"""
from __future__ import annotations

import os
import struct
import threading
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from zeroserve.wire import shm_refs
from zeroserve.wire.dtypes import BFLOAT16, dtype_named, name_of
from zeroserve.wire.envelope import KEEP_PACKER_BELOW

FRAME_THRESHOLD = 1024  # bytes; arrays at least this large get their own frame
# inline arrays at least this large are joined to their header (_inline_payload) rather than
# packed with it: one copy of their bytes instead of three; below it packb is quicker
_JOIN_INLINE_AT = 64 * 1024
# msgpack's headers that carry a length (code, length): bin, str and ext of 8, 16 and 32 bits
# (an ext's type byte follows), and maps of 16 and 32 (a count)
_LENGTH_HEADS = {code: struct.Struct(">B" + width) for codes, width in (
    ((0xC4, 0xD9, 0xC7), "B"), ((0xC5, 0xDA, 0xC8, 0xDE), "H"), ((0xC6, 0xDB, 0xC9, 0xDF), "I"))
    for code in codes}
_BIN_HEADS = {code: _LENGTH_HEADS[code] for code in (0xC4, 0xC5, 0xC6)}
_MAP_HEADS = {code: _LENGTH_HEADS[code] for code in (0xDE, 0xDF)}
_SIZED_HEADS = {code: head for code, head in _LENGTH_HEADS.items() if code not in _MAP_HEADS}
_BIN32_CODE = 0xC6
_BIN32 = _BIN_HEADS[_BIN32_CODE]
_EXT32 = struct.Struct(">BIb")  # msgpack's ext 32 header: code, payload length, ext type
_EXT32_CODE = 0xC9
_FIXEXT16_CODE = 0xD8
_MAX_MAP_ENTRIES = 64  # a larger map is unpacked whole (see _map_with_views)
_READ_AHEAD = 4096  # what a per-entry Unpacker may copy past its object

_EXT_INLINE = 1   # [dtype, shape, raw bytes]
_EXT_FRAME = 2    # [dtype, shape, frame index]
_EXT_STRINGS = 3  # [kind "U" | "O", shape, flat list of str]
_EXT_SHM = 4      # a tensor in shared memory: zeroserve.wire.shm_refs

_NUMERIC_KINDS = frozenset("biufcS")
MAX_DIMS = 32


class CodecError(ValueError):
    """A value that cannot be encoded, or bytes that do not decode to a valid value."""


def _array_header(arr: np.ndarray) -> list:
    return [name_of(arr.dtype), list(arr.shape)]


class _Frames:
    """The frames of the value one thread is packing, and its Packer's ``default``."""

    def __init__(self) -> None:
        self.frames: list = []
        self.threshold = FRAME_THRESHOLD
        # encode_parts: the large inline arrays kept apart, each as (its stand-in, its
        # payload's head, its bytes); None: they are packed in place
        self.apart: list[tuple[bytes, bytes, memoryview]] | None = None

    def default(self, obj: Any) -> Any:
        if isinstance(obj, shm_refs.ShmTensor):
            return msgpack.ExtType(_EXT_SHM, shm_refs.pack_stand_in(obj))
        if isinstance(obj, np.ndarray):
            return _encode_array(obj, self.frames, self.threshold, self.apart)
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, tuple):
            return list(obj)
        raise CodecError(f"cannot encode a value of type {type(obj).__name__}")


# one Packer per thread (packb makes one per call: 2 us of a 3 us encode); the Packer refers
# to its _Frames and not the other way, so that letting it go frees its buffer at once
_per_thread = threading.local()


def _encoder() -> tuple[_Frames, msgpack.Packer]:
    try:
        return _per_thread.encoder  # type: ignore[no-any-return]
    except AttributeError:
        state = _Frames()
        _per_thread.encoder = state, msgpack.Packer(default=state.default, use_bin_type=True)
        return _per_thread.encoder  # type: ignore[no-any-return]


def encode(value: Any, threshold: int = FRAME_THRESHOLD) -> tuple[bytes, list]:
    """Encode ``value``; return the metadata frame and the list of raw tensor frames."""
    frames: list = []
    return _pack(value, frames, threshold, None), frames


def encode_parts(value: Any) -> list[bytes | memoryview]:
    """``encode(value, threshold=inf)[0]`` (every array inline) as parts whose join is those
    bytes: each inline array of at least 64 KiB is a part of its own, a view of its memory,
    where packing it would copy it three times."""
    apart: list[tuple[bytes, bytes, memoryview]] = []
    meta = _pack(value, [], 1 << 62, apart)
    parts: list[bytes | memoryview] = []
    start = 0
    for stand_in, head, raw in apart:  # in the order packed, so in the order of ``meta``
        at = meta.index(stand_in, start)
        parts += [meta[start:at],
                  _EXT32.pack(_EXT32_CODE, len(head) + len(raw), _EXT_INLINE) + head, raw]
        start = at + len(stand_in)
    parts.append(meta[start:])
    return [part for part in parts if len(part)]


def _pack(value: Any, frames: list, threshold: int,
          apart: list[tuple[bytes, bytes, memoryview]] | None) -> bytes:
    state, packer = _encoder()
    state.frames, state.threshold, state.apart = frames, threshold, apart
    try:
        meta: bytes = packer.pack(value)
    except (TypeError, ValueError, OverflowError) as exc:  # CodecError included
        del _per_thread.encoder
        raise CodecError(str(exc)) from None
    finally:
        state.frames, state.apart = [], None  # the arrays' memory is the caller's
    if len(meta) >= KEEP_PACKER_BELOW:  # its buffer grew to this size: let it go
        del _per_thread.encoder
    return meta


def _encode_array(arr: np.ndarray, frames: list, threshold: int,
                  apart: list[tuple[bytes, bytes, memoryview]] | None = None
                  ) -> msgpack.ExtType:
    kind = arr.dtype.kind
    if kind == "U" or kind == "O":
        flat = arr.reshape(-1).tolist()
        if kind == "O" and not all(isinstance(s, (str, bytes)) for s in flat):
            raise CodecError("object arrays may hold only str or bytes")
        return msgpack.ExtType(_EXT_STRINGS, msgpack.packb(
            [kind, list(arr.shape), flat], use_bin_type=True))
    if kind not in _NUMERIC_KINDS and arr.dtype != BFLOAT16:
        raise CodecError(f"arrays of dtype {arr.dtype} cannot be sent")
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)
    raw = arr.reshape(-1).view(np.uint8) if arr.size else b""
    if arr.nbytes >= threshold:
        frames.append(raw)
        return msgpack.ExtType(_EXT_FRAME, msgpack.packb(
            [*_array_header(arr), len(frames) - 1]))
    if arr.nbytes >= _JOIN_INLINE_AT:
        if apart is not None and arr.nbytes < 1 << 32:
            # a stand-in that no other bytes of the value can match by chance, replaced by
            # the array's ext header, payload head and bytes once the rest is packed
            token = os.urandom(16)
            apart.append((bytes((_FIXEXT16_CODE, _EXT_INLINE)) + token, _inline_head(arr),
                          arr.reshape(-1).view(np.uint8).data))
            return msgpack.ExtType(_EXT_INLINE, token)
        return msgpack.ExtType(_EXT_INLINE, _inline_payload(arr))
    return msgpack.ExtType(_EXT_INLINE, msgpack.packb(
        [*_array_header(arr), bytes(raw)], use_bin_type=True))


def _inline_payload(arr: np.ndarray) -> bytes:
    """``packb([dtype, shape, the bytes of arr])`` (``arr`` C-contiguous), the same bytes,
    with one copy of the array's bytes where ``bytes()`` and ``packb`` make three: they are
    joined after the msgpack of the rest and a bin header written as msgpack writes it (bin 8,
    16 or 32)."""
    raw = arr.reshape(-1).view(np.uint8).data
    if len(raw) >= 1 << 32:  # msgpack refuses it (ValueError): let it say so
        return msgpack.packb([*_array_header(arr), raw], use_bin_type=True)
    return b"".join((_inline_head(arr), raw))


def _inline_head(arr: np.ndarray) -> bytes:
    """What comes before the bytes of ``arr`` in :func:`_inline_payload`: the array header,
    dtype and shape, and a bin 32 header, as msgpack writes them from 64 KiB
    (``_JOIN_INLINE_AT``) up."""
    name, shape = _array_header(arr)
    return b"".join((b"\x93", msgpack.packb(name, use_bin_type=True), msgpack.packb(shape),
                     _BIN32.pack(_BIN32_CODE, arr.nbytes)))


class _Reader:
    """``buf`` from ``pos`` as a file for ``msgpack.Unpacker``, which copies only what it
    reads."""

    def __init__(self, buf: memoryview, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def read(self, size: int) -> bytes:
        piece = bytes(self.buf[self.pos:self.pos + size])
        self.pos += len(piece)
        return piece


def _large_inline_at(buf: memoryview, pos: int) -> tuple[np.ndarray, int] | None:
    """The large inline array whose ext 32 starts at ``pos`` (a view of ``buf``) and the
    position after it; None when none starts there."""
    if len(buf) < pos + _EXT32.size or buf[pos] != _EXT32_CODE:
        return None
    _, size, code = _EXT32.unpack_from(buf, pos)
    start = pos + _EXT32.size
    end = start + size
    if code != _EXT_INLINE or size < _JOIN_INLINE_AT or end > len(buf):
        return None
    array = _inline_view(buf[start:end].toreadonly())  # read-only, as a view of bytes is
    return None if array is None else (array, end)


def _large_sized_at(buf: memoryview, pos: int) -> bool:
    """Whether a bin, str or ext of at least 64 KiB starts at ``pos`` (better unpacked by
    ``unpackb`` than 4 KiB at a time)."""
    head = _SIZED_HEADS.get(buf[pos]) if pos < len(buf) else None
    return head is not None and len(buf) >= pos + head.size and \
        head.unpack_from(buf, pos)[1] >= _JOIN_INLINE_AT


def _inline_view(data: bytes | memoryview) -> np.ndarray | None:
    """The array of a large inline payload (``[dtype, shape, bin]``, as
    :func:`_inline_payload` writes it) as a view of ``data``, where unpacking it whole would
    copy the bin out; None when ``data`` is laid out otherwise (unpack it whole: its value
    or error is the answer)."""
    try:
        unpacker = msgpack.Unpacker(_Reader(memoryview(data), 0), raw=False, read_size=256)
        if unpacker.read_array_header() != 3:
            return None
        name, shape = unpacker.unpack(), unpacker.unpack()
        start = unpacker.tell()
    except (ValueError, msgpack.UnpackException, TypeError, StopIteration):
        return None
    head = _BIN_HEADS.get(data[start]) if start < len(data) else None
    if head is None or start + head.size > len(data):
        return None
    size = head.unpack_from(data, start)[1]
    start += head.size
    if start + size != len(data):
        return None
    dtype, dims = _check_header(name, shape)
    return _from_buffer(dtype, dims, memoryview(data)[start:])


def _check_header(dtype_str: Any, shape: Any) -> tuple[np.dtype, tuple]:
    if not isinstance(dtype_str, str) or not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise CodecError("malformed array header")
    try:
        dtype = dtype_named(dtype_str)
    except TypeError:
        raise CodecError(f"unknown dtype {dtype_str!r}") from None
    if dtype != BFLOAT16 and (dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None
                              or dtype.subdtype is not None):
        raise CodecError(f"dtype {dtype_str!r} is not allowed")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CodecError(f"bad array shape {shape!r}")
    return dtype, tuple(shape)


def _from_buffer(dtype: np.dtype, shape: tuple, buf: Any) -> np.ndarray:
    count = 1
    for d in shape:
        count *= d
    if count * dtype.itemsize != len(buf):
        raise CodecError(f"array of {dtype} {list(shape)} needs {count * dtype.itemsize} bytes, "
                         f"frame has {len(buf)}")
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)


def _buffer(frame: Any) -> memoryview:
    buf = getattr(frame, "buffer", None)  # zmq.Frame received with copy=False
    view = memoryview(frame if buf is None else buf)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def decode(meta: Any, frames: Sequence[Any] = ()) -> Any:
    """Decode a metadata frame and its raw frames back into a value."""

    def ext_hook(code: int, data: bytes) -> Any:
        if code == _EXT_SHM:
            try:
                return shm_refs.open_packed(data)
            except shm_refs.ShmRefError as exc:
                raise CodecError(str(exc)) from None
        if code == _EXT_INLINE and len(data) >= _JOIN_INLINE_AT:
            view = _inline_view(data)
            if view is not None:
                return view
        try:
            header = msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise CodecError(f"malformed array: {exc}") from None
        if not isinstance(header, list) or len(header) != 3:
            raise CodecError("malformed array header")
        if code == _EXT_STRINGS:
            kind, shape, flat = header
            if kind not in ("U", "O") or not isinstance(flat, list) or not isinstance(shape, list):
                raise CodecError("malformed string array")
            flat_arr = np.empty(len(flat), dtype=object)
            flat_arr[:] = flat
            try:
                arr = flat_arr.reshape(shape)
            except (ValueError, TypeError):
                raise CodecError(
                    f"string array shape {shape!r} does not fit {len(flat)} items") from None
            return arr.astype(str) if kind == "U" else arr
        dtype, shape = _check_header(header[0], header[1])
        if code == _EXT_INLINE:
            if not isinstance(header[2], bytes):
                raise CodecError("inline array data must be bytes")
            return _from_buffer(dtype, shape, header[2])
        if code == _EXT_FRAME:
            index = header[2]
            if not isinstance(index, int) or not 0 <= index < len(frames):
                raise CodecError(f"array refers to frame {index!r}, message has {len(frames)}")
            return _from_buffer(dtype, shape, _buffer(frames[index]))
        raise CodecError(f"unknown extension type {code}")

    raw = getattr(meta, "bytes", meta)
    try:
        if len(raw) >= _JOIN_INLINE_AT:
            value = _map_with_views(memoryview(raw).cast("B"), ext_hook)
            if value is not _NOT_SUCH_A_MAP:
                return value
        return msgpack.unpackb(raw, ext_hook=ext_hook, raw=False, strict_map_key=False)
    except CodecError:
        raise
    except (ValueError, msgpack.UnpackException, TypeError, RecursionError) as exc:
        raise CodecError(f"malformed payload: {exc}") from None


_NOT_SUCH_A_MAP = object()


def _map_with_views(buf: memoryview, ext_hook: Any) -> Any:
    """The value of ``buf`` when it is a map of at most 64 entries (a request's named
    inputs, an answer's named outputs): the large inline arrays among its values come as
    read-only views of ``buf``, where msgpack would copy each into a ``bytes`` for the ext
    hook; every other key and value is unpacked as ``unpackb`` unpacks it.
    ``_NOT_SUCH_A_MAP`` for anything else (unpack it whole)."""
    head = buf[0]
    if 0x80 <= head <= 0x8F:
        count, pos = head & 0x0F, 1
    elif head in _MAP_HEADS and len(buf) >= _MAP_HEADS[head].size:
        count, pos = _MAP_HEADS[head].unpack_from(buf)[1], _MAP_HEADS[head].size
    else:
        return _NOT_SUCH_A_MAP
    if count > _MAX_MAP_ENTRIES:
        return _NOT_SUCH_A_MAP
    items: list[Any] = []  # keys and values, in turn
    for index in range(2 * count):
        found = _large_inline_at(buf, pos) if index % 2 else None
        if found is not None:
            item, pos = found
        elif _large_sized_at(buf, pos):  # (a large bin, say) read 4 KiB at a time: no
            return _NOT_SUCH_A_MAP
        else:
            unpacker = msgpack.Unpacker(  # with unpackb's limit: the whole buffer
                _Reader(buf, pos), read_size=_READ_AHEAD, max_buffer_size=len(buf),
                ext_hook=ext_hook, raw=False, strict_map_key=False)
            item = unpacker.unpack()  # OutOfData if the map is cut short
            pos += unpacker.tell()
        items.append(item)
    if pos != len(buf):
        raise CodecError(f"malformed payload: {len(buf) - pos} bytes after the value")
    return dict(zip(items[::2], items[1::2]))

