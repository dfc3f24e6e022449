"""The tensor codec: round trips of every dtype, zero copy for large arrays, bad input rejected."""
import tracemalloc

import ml_dtypes
import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from zeroserve.wire import codec

NUMERIC = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "float16", "float32", "float64", "complex64", "complex128"]


def roundtrip(value, **kw):
    meta, frames = codec.encode(value, **kw)
    return codec.decode(meta, [bytes(f) for f in frames])


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("size", [0, 3, 5000])
def test_every_numeric_dtype_round_trips_inline_and_framed(dtype, size):
    arr = (np.arange(size) % 7).astype(dtype)
    out = roundtrip({"a": arr})["a"]
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


# bfloat16 bits: 1.5, -inf, a NaN with a payload, the smallest subnormal, -0.0
BF16_BITS = np.array([0x3FC0, 0xFF80, 0x7FC1, 0x0001, 0x8000], dtype="<u2")


@pytest.mark.parametrize("repeat", [1, 500], ids=["inline", "framed"])
def test_bfloat16_round_trips_bit_exactly_by_name(repeat):
    arr = np.tile(BF16_BITS, repeat).view(ml_dtypes.bfloat16).reshape(repeat, 5)
    meta, frames = codec.encode({"h": arr})
    assert len(frames) == (repeat > 1)
    header = msgpack.unpackb(msgpack.unpackb(meta, raw=False)["h"].data, raw=False)
    assert header[0] == "bfloat16"  # by name: its dtype.str '<V2' names no dtype
    out = codec.decode(meta, [bytes(f) for f in frames])["h"]
    assert out.dtype == ml_dtypes.bfloat16 and out.shape == arr.shape
    assert out.view("<u2").tolist() == arr.view("<u2").tolist()


def test_bfloat16_scalar_becomes_a_float():
    assert roundtrip([ml_dtypes.bfloat16(1.5)]) == [1.5]


def test_strings_and_bytes_round_trip():
    value = {"u": np.array([["ab", "c"], ["d", "éè"]]), "s": np.array([b"xy", b"z"]),
             "o": np.array(["a", "bcd"], dtype=object)}
    out = roundtrip(value)
    np.testing.assert_array_equal(out["u"], value["u"])
    np.testing.assert_array_equal(out["s"], value["s"])
    assert out["o"].tolist() == ["a", "bcd"]


def test_python_values_and_numpy_scalars_round_trip():
    value = [1, 2.5, "x", b"y", None, True, {"k": np.float32(1.5), "t": (1, 2)}]
    assert roundtrip(value) == [1, 2.5, "x", b"y", None, True, {"k": 1.5, "t": [1, 2]}]


def test_large_array_is_sent_and_received_without_copy():
    arr = np.ones((512, 512), np.float32)
    meta, frames = codec.encode(arr)
    assert len(frames) == 1 and np.shares_memory(frames[0], arr)
    received = bytearray(frames[0].tobytes())
    out = codec.decode(meta, [received])
    assert np.shares_memory(out, np.frombuffer(received, np.uint8))


def test_non_contiguous_array_round_trips():
    arr = np.arange(4000, dtype=np.int32).reshape(40, 100)[:, ::3]
    np.testing.assert_array_equal(roundtrip(arr), arr)


@pytest.mark.parametrize("value", [object(), np.array([1, None], dtype=object),
                                   np.zeros(2, dtype="datetime64[s]"), np.zeros(2, "V2"),
                                   np.zeros(2, ml_dtypes.float8_e4m3fn)])
def test_unsupported_values_are_refused(value):
    with pytest.raises(codec.CodecError):
        codec.encode(value)


def test_frame_of_wrong_size_is_rejected():
    meta, frames = codec.encode(np.zeros(1000, np.float32))
    with pytest.raises(codec.CodecError, match="needs 4000 bytes"):
        codec.decode(meta, [bytes(100)])


def test_reference_to_missing_frame_is_rejected():
    meta, _ = codec.encode(np.zeros(1000, np.float32))
    with pytest.raises(codec.CodecError, match="frame"):
        codec.decode(meta, [])


@pytest.mark.parametrize("dtype", ["O", "V8", "<V2", "|V2", "M8[s]", "nonsense",
                                   "float8_e4m3fn"])
def test_forbidden_dtype_in_header_is_rejected(dtype):
    ext = msgpack.ExtType(1, msgpack.packb([dtype, [1], b"\0" * 8]))
    with pytest.raises(codec.CodecError):
        codec.decode(msgpack.packb(ext))


def test_garbage_is_rejected_not_crashing():
    for junk in [b"\xc1", b"\x92\x01", b"\xd4\x01\x00", b"\xc7\x03\x02abc"]:
        with pytest.raises(codec.CodecError):
            codec.decode(junk)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(st.sampled_from(NUMERIC), hnp.array_shapes(min_dims=0, max_dims=4,
                                                            max_side=20)))
def test_any_numeric_array_round_trips(arr):
    out = roundtrip(arr, threshold=64)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_an_encode_that_fails_leaves_no_frames_for_the_next_one() -> None:
    with pytest.raises(codec.CodecError, match="cannot encode a value of type object"):
        codec.encode({"big": np.zeros(4096, np.uint8), "bad": object()})
    meta, frames = codec.encode({"small": np.arange(3)})
    assert frames == []
    assert codec.decode(meta, frames)["small"].tolist() == [0, 1, 2]


def test_threads_encoding_at_once_each_get_their_own_frames() -> None:
    import threading

    failures: list = []

    def encode_many(n: int) -> None:
        for i in range(200):
            value = np.full(1024 + n, n * 1000 + i, np.int64)  # its own frame
            meta, frames = codec.encode({"v": value, "n": n})
            out = codec.decode(meta, frames)
            if len(frames) != 1 or out["n"] != n or not np.array_equal(out["v"], value):
                failures.append((n, i))

    threads = [threading.Thread(target=encode_many, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_a_large_message_does_not_leave_its_size_in_the_threads_packer():
    from zeroserve.wire import envelope

    codec.encode({"x": np.ones(8, np.float32)})
    envelope.pack_map({"small": 1})
    kept_encoder, kept_packer = codec._per_thread.encoder, envelope._per_thread.packer
    codec.encode({"x": np.ones(envelope.KEEP_PACKER_BELOW, np.uint8)}, threshold=1 << 62)
    envelope.pack_map({"r": bytes(envelope.KEEP_PACKER_BELOW)})
    assert not hasattr(codec._per_thread, "encoder")  # let go: its buffer is freed with it
    assert not hasattr(envelope._per_thread, "packer")
    codec.encode({"x": np.ones(8, np.float32)})
    envelope.pack_map({"small": 1})
    assert codec._per_thread.encoder is not kept_encoder
    assert envelope._per_thread.packer is not kept_packer


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 65537, 1 << 20])
@pytest.mark.parametrize("dtype", ["<u1", "<f4", "<i8"])
def test_a_large_inline_array_packs_to_the_same_bytes_as_packb(size, dtype):
    arr = np.arange(size // np.dtype(dtype).itemsize).astype(dtype)
    raw = arr.reshape(-1).view(np.uint8)
    packed = msgpack.packb([codec.name_of(arr.dtype), list(arr.shape), bytes(raw)],
                           use_bin_type=True)
    if arr.nbytes >= codec._JOIN_INLINE_AT:  # smaller arrays are packed by packb itself
        assert codec._inline_payload(arr) == packed
    meta, frames = codec.encode({"x": arr}, threshold=1 << 62)
    assert not frames
    assert codec.decode(meta)["x"].dtype == arr.dtype
    np.testing.assert_array_equal(codec.decode(meta)["x"], arr)


def test_a_large_inline_array_is_decoded_with_one_copy_of_its_bytes():
    arr = np.arange(1 << 20, dtype=np.float32)  # 4 MiB
    meta, _ = codec.encode([arr], threshold=1 << 62)
    tracemalloc.start()
    try:
        decoded = codec.decode(meta)[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(decoded, arr)
    assert peak < 1.5 * arr.nbytes  # msgpack's copy of the ext data; the array is a view of it


@pytest.mark.parametrize("value", [
    np.ones(1 << 15, np.float32),  # 128 KiB: a part of its own
    {"a": np.arange(20_000, dtype=np.int64), "b": [1, "x", np.arange(10)], "c": None},
    [np.ones(65_536, np.uint8), b"\xd8\x01" * 9, np.ones(65_535, np.uint8)],  # 64 KiB - 1: packed
    np.ones((1000, 200), np.float32)[:, ::2],  # not contiguous: a contiguous copy goes apart
    {"small": np.ones(3), "none": None, "text": np.array(["a", "b"])},
])
def test_encode_parts_join_to_the_inline_encoding(value):
    assert b"".join(codec.encode_parts(value)) == codec.encode(value, threshold=1 << 62)[0]


def test_encode_parts_keep_each_large_array_as_a_view_of_its_memory():
    big, other = np.arange(1 << 18, dtype=np.float32), np.arange(1 << 16, dtype=np.int32)
    parts = codec.encode_parts({"big": big, "small": np.arange(4), "other": other})
    views = [part for part in parts if isinstance(part, memoryview)]
    assert len(views) == 2
    assert np.shares_memory(np.frombuffer(views[0], np.float32), big)
    assert np.shares_memory(np.frombuffer(views[1], np.int32), other)
    decoded = codec.decode(b"".join(parts))
    np.testing.assert_array_equal(decoded["big"], big)
    np.testing.assert_array_equal(decoded["other"], other)


def test_a_map_of_large_inline_arrays_is_decoded_to_views_of_its_buffer():
    x, y = np.arange(1 << 18, dtype=np.float32), np.arange(1 << 15, dtype=np.int64)
    buffer = b"".join(codec.encode_parts({"x": x, "n": 3, "y": y, "s": ["a", {"b": None}]}))
    value = codec.decode(buffer)
    assert value["n"] == 3 and value["s"] == ["a", {"b": None}]
    for name, arr in (("x", x), ("y", y)):
        np.testing.assert_array_equal(value[name], arr)
        assert np.shares_memory(value[name], np.frombuffer(buffer, np.uint8))
        assert not value[name].flags.writeable
    assert not codec.decode(bytearray(buffer))["x"].flags.writeable  # of a writable buffer too


def test_a_map_with_a_large_bin_beside_its_arrays_decodes_as_unpackb_does():
    x = np.arange(1 << 16, dtype=np.float32)
    value = codec.decode(b"".join(codec.encode_parts(
        {"x": x, "raw": b"\x01" * (1 << 17), "text": "t" * (1 << 16), "n": 1})))
    np.testing.assert_array_equal(value["x"], x)
    assert value["raw"] == b"\x01" * (1 << 17) and value["text"] == "t" * (1 << 16)
    assert value["n"] == 1


@pytest.mark.parametrize("cut", [
    lambda b: b[:-1],  # the last array cut short
    lambda b: b + b"\x00",  # a byte after the map
    lambda b: b[:40],  # cut inside the first array's header
    lambda b: b"\x83" + b[1:],  # a map that claims an entry more than it has
])
def test_a_malformed_map_of_large_arrays_is_refused(cut):
    buffer = b"".join(codec.encode_parts({"x": np.ones(1 << 16, np.float32), "n": 1}))
    with pytest.raises(codec.CodecError):
        codec.decode(cut(buffer))


def _inline_ext(body: bytes) -> bytes:
    return msgpack.packb(msgpack.ExtType(codec._EXT_INLINE, body))


@pytest.mark.parametrize("body", [
    codec._inline_payload(np.ones(1 << 15, np.float32)) + b"\x00",  # a byte after the bin
    codec._inline_payload(np.ones(1 << 15, np.float32))[:-1],  # the bin cut short
    b"\x93" + msgpack.packb("float32") + msgpack.packb([1 << 15]) + b"\xd9" + bytes(1 << 17),
    b"\x92" + msgpack.packb("float32") + msgpack.packb(bytes(1 << 17)),
    b"\x93" + msgpack.packb("object") + msgpack.packb([4]) + msgpack.packb(bytes(1 << 17)),
    b"\x93" + msgpack.packb("float32") + msgpack.packb([7]) + msgpack.packb(bytes(1 << 17)),
])
def test_a_malformed_large_inline_array_is_refused(body):
    with pytest.raises(codec.CodecError):
        codec.decode(_inline_ext(body))
