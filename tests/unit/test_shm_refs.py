"""Shared memory references (zeroserve.wire.shm_refs): what a worker checks before it reads a
caller's object, the array it gives (read-only, its own), and how the codec carries them."""
from __future__ import annotations

import os
from pathlib import Path

import msgpack
import numpy as np
import pytest

from zeroserve.wire import codec, shm_refs
from zeroserve.wire.shm_refs import (
    ShmRef,
    ShmRefError,
    ShmRefReader,
    _read,
    accept_references,
    namespace,
    stand_in,
)

SPACE = "boot-1:64:7"


@pytest.fixture
def reader(tmp_path: Path) -> ShmRefReader:
    return ShmRefReader("/zeroserve_", SPACE, tmp_path)


@pytest.fixture
def accepting(reader: ShmRefReader):
    accept_references(reader)
    try:
        yield reader
    finally:
        accept_references(None)


def _object(folder: Path, name: str, data: bytes) -> str:
    (folder / name).write_bytes(data)
    return name


def _ref(key: str, offset: int = 0, shape: tuple = (4,), dtype: str = "<f4",
         byte_size: int | None = None, space: str = SPACE) -> ShmRef:
    dt = np.dtype(dtype)
    size = int(np.prod(shape)) * dt.itemsize if byte_size is None else byte_size
    return ShmRef(space, key, offset, size, dt, shape)


def test_an_object_that_shrinks_while_it_is_read_is_an_error_not_a_crash(tmp_path):
    key = _object(tmp_path, "zeroserve_short", bytes(8))  # 2 of the 4 floats the ref names
    fd = os.open(tmp_path / key, os.O_RDONLY)
    try:
        with pytest.raises(ShmRefError, match="shrank while it was read .8 of 16 bytes"):
            _read(fd, _ref(key))
    finally:
        os.close(fd)


def test_a_reference_opens_as_a_read_only_array_of_the_objects_bytes(reader, tmp_path):
    data = np.arange(3000, dtype=np.float32)
    key = _object(tmp_path, "zeroserve_in", bytes(12) + data.tobytes())
    arr = reader.open(_ref(key, offset=12 + 4 * 1000, shape=(2, 1000)))  # not page aligned
    np.testing.assert_array_equal(arr, data[1000:].reshape(2, 1000))
    assert not arr.flags.writeable and arr.flags.owndata  # read, not mapped: no SIGBUS
    empty = reader.open(_ref(key, offset=0, shape=(0, 3)))
    assert empty.shape == (0, 3) and not empty.flags.writeable


@pytest.mark.parametrize("key, reason", [
    ("other_in", "outside this worker's prefix"),
    ("zeroserve_../etc/passwd", "not a plain name"),
    ("..", "not a plain name"),
    ("zeroserve_a/b", "not a plain name"),
    ("zeroserve_\0", "not a plain name"),
    ("", "not a plain name"),
    ("zeroserve_" + "x" * 250, "not a plain name"),
])
def test_keys_outside_the_prefix_or_not_plain_names_are_refused(reader, key, reason):
    with pytest.raises(ShmRefError, match=reason):
        reader.open(_ref(key))


def test_a_reader_without_a_prefix_refuses_every_key(tmp_path):
    _object(tmp_path, "zeroserve_in", bytes(16))
    with pytest.raises(ShmRefError, match="outside this worker's prefix"):
        ShmRefReader("", SPACE, tmp_path).open(_ref("zeroserve_in"))


def test_a_reference_to_another_namespace_is_refused_before_any_file_is_opened(reader):
    with pytest.raises(ShmRefError, match="namespace 'boot-2:64:7'.*another host"):
        reader.open(_ref("zeroserve_missing", space="boot-2:64:7"))


def test_bytes_outside_the_object_are_refused(reader, tmp_path):
    key = _object(tmp_path, "zeroserve_small", bytes(16))
    reader.open(_ref(key, offset=0, shape=(4,)))
    with pytest.raises(ShmRefError, match="runs past the end"):
        reader.open(_ref(key, offset=4, shape=(4,)))
    with pytest.raises(ShmRefError, match="cannot open"):
        reader.open(_ref("zeroserve_missing"))


def test_a_byte_size_that_is_not_the_shapes_is_refused(reader, tmp_path):
    key = _object(tmp_path, "zeroserve_in", bytes(64))
    with pytest.raises(ShmRefError, match="needs 16 bytes, the reference gives 20"):
        reader.open(_ref(key, shape=(4,), byte_size=20))
    with pytest.raises(ShmRefError, match="cannot be read from shared memory in place"):
        reader.open(_ref(key, shape=(4,), dtype="?"))


def test_links_and_folders_are_never_followed(reader, tmp_path):
    target = _object(tmp_path, "elsewhere", bytes(64))
    os.symlink(tmp_path / target, tmp_path / "zeroserve_link")
    (tmp_path / "zeroserve_dir").mkdir()
    with pytest.raises(ShmRefError, match="cannot open"):
        reader.open(_ref("zeroserve_link"))
    with pytest.raises(ShmRefError, match="cannot open|not a shared memory object"):
        reader.open(_ref("zeroserve_dir"))


def test_the_namespace_is_the_boot_and_the_folders_identity(tmp_path):
    boot = tmp_path / "boot_id"
    boot.write_text("abc-123\n")
    info = os.stat(tmp_path)
    assert namespace(tmp_path, boot) == f"abc-123:{info.st_dev}:{info.st_ino}"
    (tmp_path / "other").mkdir()
    assert namespace(tmp_path / "other", boot) != namespace(tmp_path, boot)
    assert namespace(tmp_path / "missing", boot) is None
    assert namespace(tmp_path, tmp_path / "no_boot_id") is None


def test_the_codec_carries_a_stand_in_as_a_reference_that_a_reader_opens(accepting, tmp_path):
    data = np.arange(256, dtype=np.float32).reshape(16, 16)
    key = _object(tmp_path, "zeroserve_codec", data.tobytes())
    sent = stand_in(_ref(key, shape=(16, 16)))
    assert sent.shape == (16, 16) and sent.dtype == np.float32 and not sent.flags.writeable
    meta, frames = codec.encode({"x": sent, "n": 3})
    assert frames == [] and len(meta) < 200  # no byte of the tensor travels
    got = codec.decode(meta, frames)
    np.testing.assert_array_equal(got["x"], data)
    assert got["n"] == 3 and got["x"].flags.owndata


def test_a_process_that_accepts_no_references_refuses_them(tmp_path):
    key = _object(tmp_path, "zeroserve_codec", bytes(16))
    meta, frames = codec.encode({"x": stand_in(_ref(key))})
    with pytest.raises(codec.CodecError, match="not accepted here"):
        codec.decode(meta, frames)


def test_a_refused_reference_is_a_codec_error_naming_the_reason(accepting):
    meta, _ = codec.encode({"x": stand_in(_ref("zeroserve_x", space="elsewhere"))})
    with pytest.raises(codec.CodecError, match="another host or container"):
        codec.decode(meta)


def test_a_view_of_a_stand_in_is_never_sent_as_the_whole_tensor(tmp_path):
    sent = stand_in(_ref("zeroserve_x", shape=(4, 4)))
    with pytest.raises(codec.CodecError, match="view of a tensor in shared memory"):
        codec.encode({"x": sent[1:]})


@pytest.mark.parametrize("fields", [
    [SPACE, "zeroserve_x", 0, 16, "<f4"],
    [SPACE, "zeroserve_x", -1, 16, "<f4", [4]],
    [SPACE, "zeroserve_x", 0, 16, "<f4", [4.0]],
    [SPACE, 7, 0, 16, "<f4", [4]],
    [SPACE, "zeroserve_x", True, 16, "<f4", [4]],
    [SPACE, "zeroserve_x", 0, 16, "no-such-dtype", [4]],
])
def test_malformed_references_are_refused(fields):
    with pytest.raises(ShmRefError):
        ShmRef.unpack(msgpack.packb(fields))
    with pytest.raises(ShmRefError):
        ShmRef.unpack(b"\xc1")


def test_a_reference_packs_and_unpacks_to_itself():
    ref = _ref("zeroserve_x", offset=4096, shape=(2, 3), dtype="<i8")
    assert ShmRef.unpack(ref.pack()) == ref
    assert shm_refs.referable(np.dtype("<f2")) and not shm_refs.referable(np.dtype("O"))
