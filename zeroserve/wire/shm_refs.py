"""Shared memory references: a tensor that a worker reads in place from ``/dev/shm``.

Where a caller's input lies in a registered system shared memory region and every worker of
the service shares the gateway's shared memory namespace, the gateway sends, instead of the
tensor's bytes, a :class:`ShmRef`: the object's file name in ``/dev/shm`` (its *key*, without
the leading ``/``), the tensor's offset in it and byte size, its dtype and shape, and the
gateway's :func:`namespace`. The codec carries it as its own extension type
(:mod:`zeroserve.wire.codec`, docs/protocol.md); a worker decodes it with :meth:`ShmRefReader.open`
into a read-only array of its own, read from the object.

A *namespace* names one ``/dev/shm``: ``{boot_id}:{st_dev}:{st_ino}`` (the kernel's boot id,
and the device and inode of the folder: a container with a private ``/dev/shm`` has another
one). Two processes that share a namespace open the same object under the same name.

What a reader checks before it reads anything (each failure a :class:`ShmRefError`, which the
worker answers as BAD_REQUEST): the reference names the reader's own namespace; the key is
one plain name (no ``/``, ``..`` or NUL) under the reader's key prefix (``worker.shm_key_prefix``,
the same as the gateway's ``gateway.shm_key_prefix``); the object is a regular file, opened
read-only without following links; offset + byte size lie within the file; the byte size is
the shape's element count times the dtype's item size; the dtype is a fixed-size number.

The gateway checks the region (its owner, bounds, the tensor's size) before it sends a
reference (:mod:`gateway.shm_regions`); the reader's checks make sure that whatever reaches a
worker cannot make it read outside the prefix. A client that shrinks its object while a worker
reads it gets an error, not a crash: the worker reads with ``preadv`` into its own array
instead of mapping the object (a mapping would kill the worker with SIGBUS at the first page
past a truncated end; docs/oip.md).

Which reader decodes references is a fact of the process (its ``/dev/shm``): a worker
installs its reader with :func:`accept_references` at start; a process that installs none
(the gateway decoding answers, job processes) refuses every reference.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from zeroserve.wire.dtypes import BFLOAT16, dtype_named, name_of

SHM_DIR = Path("/dev/shm")
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
MAX_KEY_CHARS = 255  # NAME_MAX
_MAX_DIMS = 32
_NUMBER_KINDS = frozenset("iufc")  # BOOL is copied: its bytes are checked (0 or 1)


class ShmRefError(ValueError):
    """A shared memory reference that cannot be read here; the message says why."""


def namespace(shm_dir: Path = SHM_DIR, boot_id_path: Path = BOOT_ID_PATH) -> str | None:
    """The shared memory namespace of this process (``{boot_id}:{st_dev}:{st_ino}`` of
    ``shm_dir``), or None when ``shm_dir`` or the boot id cannot be read."""
    try:
        boot_id = boot_id_path.read_text().strip()
        info = os.stat(shm_dir)
    except OSError:
        return None
    return f"{boot_id}:{info.st_dev}:{info.st_ino}" if boot_id else None


@dataclass(frozen=True)
class ShmRef:
    """A tensor of ``dtype`` and ``shape`` at bytes ``[offset, offset + byte_size)`` of the
    object ``key`` (a file name in ``/dev/shm``) in namespace ``namespace``."""

    namespace: str
    key: str
    offset: int
    byte_size: int
    dtype: np.dtype
    shape: tuple[int, ...]

    def pack(self) -> bytes:
        """The reference as the codec's extension data: ``[namespace, key, offset,
        byte_size, dtype, shape]``."""
        return msgpack.packb([self.namespace, self.key, self.offset, self.byte_size,
                              name_of(self.dtype), list(self.shape)], use_bin_type=True)

    @classmethod
    def unpack(cls, data: bytes) -> ShmRef:
        """The reference packed in ``data`` (checked for types only; :class:`ShmRefError`)."""
        try:
            fields = msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise ShmRefError(f"malformed shared memory reference: {exc}") from None
        if not isinstance(fields, list) or len(fields) != 6:
            raise ShmRefError("malformed shared memory reference")
        space, key, offset, byte_size, dtype_str, shape = fields
        if not isinstance(space, str) or not isinstance(key, str) or \
                not isinstance(dtype_str, str) or not isinstance(shape, list) or \
                len(shape) > _MAX_DIMS or not all(_count(v) for v in (offset, byte_size, *shape)):
            raise ShmRefError("malformed shared memory reference")
        try:
            dtype = dtype_named(dtype_str)
        except TypeError:
            raise ShmRefError(f"unknown dtype {dtype_str!r} in a shared memory reference"
                              ) from None
        return cls(space, key, offset, byte_size, dtype, tuple(shape))


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def referable(dtype: np.dtype) -> bool:
    """Whether a tensor of ``dtype`` may travel as a reference (fixed-size numbers only)."""
    return dtype == BFLOAT16 or (dtype.kind in _NUMBER_KINDS and dtype.fields is None
                                 and dtype.subdtype is None)


class ShmTensor(np.ndarray):
    """What stands for a tensor in shared memory on the gateway until the codec sends its
    :attr:`reference`: an array of the tensor's dtype and shape that holds no data (every
    element aliases one zero), so that schema checks and batch keys, which look at dtype and
    shape only, take it as the tensor. A view of it has no reference and cannot be sent."""

    reference: ShmRef | None = None

    def __array_finalize__(self, obj: Any) -> None:
        self.reference = None


def stand_in(ref: ShmRef) -> ShmTensor:
    """The :class:`ShmTensor` that stands for ``ref`` (read-only)."""
    one = np.zeros(1, ref.dtype)
    arr = np.lib.stride_tricks.as_strided(one, ref.shape, (0,) * len(ref.shape),
                                          writeable=False).view(ShmTensor)
    arr.reference = ref
    return arr


def pack_stand_in(arr: ShmTensor) -> bytes:
    """The extension data of ``arr``'s reference (:class:`ShmRefError` for a view)."""
    if arr.reference is None or arr.shape != arr.reference.shape or \
            arr.dtype != arr.reference.dtype:
        raise ShmRefError("a view of a tensor in shared memory cannot be sent")
    return arr.reference.pack()


def check_key(key: str, prefix: str) -> str:
    """``key`` as a file name if it is one plain name under ``prefix`` (leading slashes of
    both ignored); else :class:`ShmRefError`."""
    name, bare_prefix = key.lstrip("/"), prefix.lstrip("/")
    if not name or "/" in name or "\0" in name or name in (".", "..") or \
            len(name) > MAX_KEY_CHARS:
        raise ShmRefError(f"shared memory key {key!r} is not a plain name")
    if not bare_prefix or not name.startswith(bare_prefix):
        raise ShmRefError(f"shared memory key {key!r} is outside this worker's prefix "
                          f"{prefix!r} (worker.shm_key_prefix)")
    return name


def check_size(ref: ShmRef) -> None:
    """:class:`ShmRefError` unless ``ref``'s byte size is its shape's elements times its
    item size, of a dtype that may be referred to."""
    if not referable(ref.dtype):
        raise ShmRefError(f"dtype {ref.dtype} cannot be read from shared memory in place")
    count = 1
    for d in ref.shape:
        count *= d
    if count * ref.dtype.itemsize != ref.byte_size:
        raise ShmRefError(f"a shared memory tensor of {ref.dtype} {list(ref.shape)} needs "
                          f"{count * ref.dtype.itemsize} bytes, the reference gives "
                          f"{ref.byte_size}")


@dataclass(frozen=True)
class ShmRefReader:
    """Opens references in namespace ``space`` whose keys start with ``prefix``, from
    ``shm_dir``."""

    prefix: str
    space: str
    shm_dir: Path = SHM_DIR

    def check(self, ref: ShmRef) -> str:
        """The file name of ``ref``'s object after the checks that need no file."""
        if ref.namespace != self.space:
            raise ShmRefError(f"the shared memory reference names namespace {ref.namespace!r}, "
                              f"this worker's is {self.space!r} (another host or container)")
        name = check_key(ref.key, self.prefix)
        check_size(ref)
        return name

    def open(self, ref: ShmRef) -> np.ndarray:
        """The tensor ``ref`` names, read from the object into a read-only array of the worker's
        own (one copy, in this process: nothing travels through the gateway or the broker).
        :class:`ShmRefError` if a check fails or the object shrank while it was read."""
        fd, info = open_object(self.shm_dir / self.check(ref), ref.key, os.O_RDONLY,
                               ShmRefError)
        try:
            if ref.offset + ref.byte_size > info.st_size:
                raise ShmRefError(
                    f"offset {ref.offset} + byte size {ref.byte_size} runs past the end of "
                    f"shared memory key {ref.key!r} ({info.st_size} bytes)")
            return _read(fd, ref)
        finally:
            os.close(fd)

    def info(self) -> dict[str, str]:
        """What a worker's READY says of it (``info``: ``shm_namespace``, ``shm_key_prefix``)."""
        return {"shm_namespace": self.space, "shm_key_prefix": self.prefix}


def open_object(path: Path, key: str, flags: int, error: type[Exception]
                ) -> tuple[int, os.stat_result]:
    """A descriptor of the shared memory object at ``path`` (``key`` names it in errors) and
    its status: opened with ``flags`` without following a link, and only a regular file;
    ``error`` (raised with the reason) otherwise."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise error(f"cannot open shared memory key {key!r}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise error(f"shared memory key {key!r} is not a shared memory object")
    return fd, info


def _read(fd: int, ref: ShmRef) -> np.ndarray:
    """The ``ref.byte_size`` bytes at ``ref.offset`` of ``fd`` as a read-only array."""
    arr = np.empty(ref.shape, ref.dtype)
    view = arr.reshape(-1).view(np.uint8).data if arr.size else memoryview(b"")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], ref.offset + done)
        if got == 0:
            raise ShmRefError(f"shared memory key {ref.key!r} shrank while it was read "
                              f"({done} of {ref.byte_size} bytes)")
        done += got
    arr.flags.writeable = False
    return arr


_reader: ShmRefReader | None = None

def accept_references(reader: ShmRefReader | None) -> None:
    """Let this process decode references with ``reader`` (None: refuse them)."""
    global _reader
    _reader = reader


def open_packed(data: bytes) -> np.ndarray:
    """The tensor of a packed reference, read with this process's reader
    (:func:`accept_references`); :class:`ShmRefError` if there is none or a check fails."""
    ref = ShmRef.unpack(data)
    if _reader is None:
        raise ShmRefError("shared memory references are not accepted here")
    return _reader.open(ref)


def local_reader(prefix: str, shm_dir: Path = SHM_DIR) -> ShmRefReader | None:
    """The reader of this host's ``shm_dir`` for keys under ``prefix``; None (read nothing in
    place) when ``prefix`` is empty or the namespace cannot be known."""
    space = namespace(shm_dir)
    return ShmRefReader(prefix, space, shm_dir) if prefix and space is not None else None
