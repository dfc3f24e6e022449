"""Triton's system shared memory extension: the registry of the regions that callers register.

A caller creates a POSIX shared memory object (``shm_open``: ``/dev/shm/<key>``; what
``tritonclient.utils.shared_memory`` does) and registers a *region* of it: a name, the
object's key, an offset into the object and a size. Inference requests then name a region,
an offset into it and a byte size for each input read from it or output written to it.

What the registry promises:

- only keys under the gateway's prefix (``gateway.shm_key_prefix``, leading slashes ignored)
  may be registered at all, and a key is a plain name in ``/dev/shm``: no ``/`` inside it,
  never a symbolic link (``O_NOFOLLOW``), only a regular file. An empty prefix turns the
  extension off;
- a region belongs to its *owner*, the caller that registered it (:func:`owner_of`: the API
  key's name, or with keys off the client's address). Each owner has its own names; an object
  registered by one owner cannot be registered by another, under any of its names (it is known
  by its inode), so one caller never reads or writes the memory another registered. Status and
  unregister see only the caller's regions;
- every read and write is checked against the region's bounds, and against the object's size
  at that moment (a client may shrink it after registering);
- regions are read and written with ``pread``/``pwrite`` on a descriptor held open from
  register to unregister, never mapped: a mapping of an object that its client truncates would
  kill the gateway with SIGBUS on the next access, while a short read is an error answer.
- where every worker of the service shares the gateway's ``/dev/shm`` (its namespace, and a
  key prefix that admits the gateway's keys) and ``gateway.shm_direct`` is on, an input is not
  read at all: after the same checks, :meth:`RegionRegistry.reference` gives a
  :class:`~zeroserve.wire.shm_refs.ShmRef` to it, which the worker reads
  (:mod:`gateway.shm_direct`).

Every refusal is a :class:`RegionError`, a :class:`~zeroserve.wire.oip_tensors.TensorError`:
400 over HTTP, INVALID_ARGUMENT over gRPC.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeroserve.wire.oip_tensors import TensorError
from zeroserve.wire.shm_refs import ShmRef, namespace, open_object

SHM_DIR = Path("/dev/shm")
REGION_PARAM = "shared_memory_region"
SIZE_PARAM = "shared_memory_byte_size"
OFFSET_PARAM = "shared_memory_offset"
PARAMS = (REGION_PARAM, SIZE_PARAM, OFFSET_PARAM)
MAX_REGIONS_PER_OWNER = 256  # each holds a file descriptor
_MAX_KEY_CHARS = 255         # NAME_MAX


class RegionError(TensorError):
    """A shared memory call or tensor that cannot be served; the message says why."""


@dataclass
class Region:
    """A registered region: bytes ``[offset, offset + byte_size)`` of the object ``key``,
    read and written through ``fd`` (owned by the registry, closed on unregister);
    ``object_id`` is the object's device and inode (one object may have several names)."""

    name: str
    key: str
    offset: int
    byte_size: int
    owner: str
    fd: int = field(repr=False)
    object_id: tuple[int, int] = (0, 0)

    def status(self) -> dict[str, Any]:
        """Triton's status entry of the region."""
        return {"name": self.name, "key": self.key, "offset": self.offset,
                "byte_size": self.byte_size}


@dataclass(frozen=True)
class ShmSlice:
    """Where one tensor lies: ``byte_size`` bytes at ``offset`` in region ``region``."""

    region: str
    byte_size: int
    offset: int = 0


def owner_of(identity_name: str | None, peer_host: str) -> str:
    """The owner of the regions a caller registers: its API key's name when keys are on,
    else its address (the host, not the port: a client's connections share its regions)."""
    return f"key:{identity_name}" if identity_name is not None else f"peer:{peer_host}"


def grpc_peer_host(peer: str) -> str:
    """The host of a grpc.aio peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``);
    anything else whole."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or rest
    return peer


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RegionError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def slice_of(params: Mapping[str, Any], tensor: str) -> ShmSlice | None:
    """The shared memory slice that a tensor's parameters name, or None when they name none
    (Triton's rules: ``shared_memory_region`` and ``shared_memory_byte_size`` together,
    ``shared_memory_offset`` optional, default 0)."""
    region = params.get(REGION_PARAM)
    if region is None:
        if SIZE_PARAM in params or OFFSET_PARAM in params:
            raise RegionError(f"tensor '{tensor}': {SIZE_PARAM} and {OFFSET_PARAM} need "
                              f"{REGION_PARAM}")
        return None
    if not isinstance(region, str) or not region:
        raise RegionError(f"tensor '{tensor}': {REGION_PARAM} must be a region's name")
    if params.get(SIZE_PARAM) is None:
        raise RegionError(f"tensor '{tensor}': {REGION_PARAM} needs {SIZE_PARAM}")
    return ShmSlice(region, _count(params[SIZE_PARAM], f"tensor '{tensor}': {SIZE_PARAM}"),
                    _count(params.get(OFFSET_PARAM, 0), f"tensor '{tensor}': {OFFSET_PARAM}"))


class RegionRegistry:
    """The system shared memory regions registered on one gateway, by owner and name.

    ``key_prefix`` is the prefix every key must start with (empty: the extension is off and
    every call is refused); ``max_read_bytes`` the most bytes one input may take from a
    region (the gateway's body limit: a tensor in shared memory is held in the gateway's
    memory like a body); ``shm_dir`` is where keys live (``/dev/shm``; tests use another
    folder). ``direct``: send references to inputs to workers that share ``shm_dir``
    (``gateway.shm_direct``); ``space`` is its namespace
    (:func:`zeroserve.wire.shm_refs.namespace`; None: direct is off or it is unknown)."""

    def __init__(self, key_prefix: str, max_read_bytes: int = 256 * 1024 * 1024,
                 shm_dir: Path = SHM_DIR, direct: bool = True) -> None:
        self.key_prefix = key_prefix
        self.max_read_bytes = max_read_bytes
        self.shm_dir = shm_dir
        self.space = namespace(shm_dir) if direct else None
        self._regions: dict[tuple[str, str], Region] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.key_prefix)

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise RegionError("system shared memory is off on this gateway "
                              "(gateway.shm_key_prefix is empty)")

    def _file_name(self, key: str) -> str:
        name = key.lstrip("/")
        prefix = self.key_prefix.lstrip("/")
        if not name or "/" in name or "\0" in name or name in (".", "..") or \
                len(name) > _MAX_KEY_CHARS:
            raise RegionError(f"shared memory key {key!r} is not a plain name: give "
                              f"'/{prefix}...', one name in {self.shm_dir}")
        if not name.startswith(prefix):
            raise RegionError(f"shared memory key {key!r} is outside this gateway's prefix "
                              f"'{self.key_prefix}' (gateway.shm_key_prefix): only keys under "
                              "it may be registered")
        return name

    def register(self, owner: str, name: str, key: Any, offset: Any, byte_size: Any) -> Region:
        """Register region ``name`` of ``owner``: ``byte_size`` bytes at ``offset`` of the
        object ``key``, which must exist and be that large (each value is checked: it may
        come from a JSON body)."""
        self._check_enabled()
        if not isinstance(name, str) or not name:
            raise RegionError("a shared memory region needs a name")
        if not isinstance(key, str):
            raise RegionError(f"shared memory region '{name}': key must be a string")
        offset = _count(offset, f"shared memory region '{name}': offset")
        byte_size = _count(byte_size, f"shared memory region '{name}': byte_size")
        file_name = self._file_name(key)
        if (owner, name) in self._regions:
            raise RegionError(f"shared memory region '{name}' already in manager")
        if sum(1 for o, _ in self._regions if o == owner) >= MAX_REGIONS_PER_OWNER:
            raise RegionError(f"cannot register shared memory region '{name}': this caller has "
                              f"{MAX_REGIONS_PER_OWNER} regions, the most allowed")
        fd, info = open_object(self.shm_dir / file_name, key, os.O_RDWR, RegionError)
        try:
            if offset + byte_size > info.st_size:
                raise RegionError(
                    f"shared memory region '{name}': offset {offset} + byte_size {byte_size} "
                    f"runs past the end of key {key!r} ({info.st_size} bytes)")
            object_id = (info.st_dev, info.st_ino)  # the object, whatever name reaches it
            if any(r.object_id == object_id and r.owner != owner
                   for r in self._regions.values()):
                raise RegionError(f"cannot register shared memory region '{name}': key "
                                  f"{key!r} is registered by another caller")
        except BaseException:
            os.close(fd)
            raise
        region = Region(name, key, offset, byte_size, owner, fd, object_id)
        self._regions[(owner, name)] = region
        return region

    def unregister(self, owner: str, name: str = "") -> list[str]:
        """Unregister ``owner``'s region ``name``, or all of its regions when ``name`` is
        empty; the names unregistered. A name the owner has not registered unregisters
        nothing, as with Triton (clean-up code unregisters what it may not have registered)."""
        self._check_enabled()
        names = [n for o, n in self._regions if o == owner and (not name or n == name)]
        for each in names:
            os.close(self._regions.pop((owner, each)).fd)
        return names

    def status(self, owner: str, name: str = "") -> list[Region]:
        """``owner``'s region ``name``, or all of its regions when ``name`` is empty."""
        self._check_enabled()
        if name:
            return [self._find(owner, name)]
        return [r for (o, _), r in self._regions.items() if o == owner]

    def _find(self, owner: str, name: str) -> Region:
        region = self._regions.get((owner, name))
        if region is not None:
            return region
        if any(n == name for _, n in self._regions):
            raise RegionError(f"Unable to find system shared memory region: '{name}' for this "
                              "caller: a region of that name is registered by another caller "
                              "(API key or, with keys off, client address), and a region "
                              "serves only the caller that registered it")
        raise RegionError(f"Unable to find system shared memory region: '{name}'")

    def _place(self, owner: str, where: ShmSlice, tensor: str) -> tuple[Region, int]:
        """The region of a tensor's slice and the slice's offset in the object, after the
        bounds checks."""
        self._check_enabled()
        region = self._find(owner, where.region)
        if where.offset + where.byte_size > region.byte_size:
            raise RegionError(
                f"tensor '{tensor}': offset {where.offset} + byte size {where.byte_size} is "
                f"outside shared memory region '{region.name}' ({region.byte_size} bytes)")
        start = region.offset + where.offset
        size = os.fstat(region.fd).st_size
        if start + where.byte_size > size:
            raise RegionError(f"tensor '{tensor}': shared memory key {region.key!r} shrank to "
                              f"{size} bytes since region '{region.name}' was registered")
        return region, start

    def read(self, owner: str, where: ShmSlice, tensor: str) -> np.ndarray:
        """A copy of the bytes of input ``tensor`` at ``where`` in one of ``owner``'s regions
        (uint8, the caller's to keep)."""
        region, start = self._place(owner, where, tensor)
        if where.byte_size > self.max_read_bytes:
            raise RegionError(f"tensor '{tensor}': {where.byte_size} bytes in shared memory are "
                              f"more than the gateway's limit of {self.max_read_bytes} bytes "
                              "(gateway.max_body_bytes)")
        out = np.empty(where.byte_size, np.uint8)  # not zero-filled first: half a bytearray's cost
        view = out.data
        done = 0
        while done < where.byte_size:
            got = os.preadv(region.fd, [view[done:]], start + done)
            if got == 0:
                raise RegionError(f"tensor '{tensor}': shared memory key {region.key!r} ended "
                                  "while it was read")
            done += got
        return out

    def reads_in_place(self, workers: frozenset[tuple[str | None, str | None]]) -> bool:
        """Whether inputs may go to workers with these ``(namespace, key prefix)`` as
        references: there are some, and each shares this gateway's namespace and admits every
        key under its prefix."""
        prefix = self.key_prefix.lstrip("/")
        return self.space is not None and bool(workers) and all(
            space == self.space and worker_prefix is not None and worker_prefix.lstrip("/")
            and prefix.startswith(worker_prefix.lstrip("/")) for space, worker_prefix in workers)

    def reference(self, owner: str, where: ShmSlice, tensor: str, dtype: np.dtype,
                  shape: tuple[int, ...]) -> ShmRef:
        """A reference to input ``tensor`` (``dtype``, ``shape``) at ``where`` in one of
        ``owner``'s regions, after the checks of :meth:`read` but the gateway's size limit
        (the gateway holds none of it); its byte size must be the shape's."""
        region, start = self._place(owner, where, tensor)
        count = 1
        for d in shape:
            count *= d
        if count * dtype.itemsize != where.byte_size:
            raise RegionError(f"tensor '{tensor}': shape {list(shape)} of {dtype} needs "
                              f"{count * dtype.itemsize} bytes, got {where.byte_size} "
                              f"({SIZE_PARAM})")
        assert self.space is not None, "reads_in_place() first"
        return ShmRef(self.space, region.key.lstrip("/"), start, where.byte_size, dtype, shape)

    def write(self, owner: str, where: ShmSlice, tensor: str, data: bytes | memoryview) -> int:
        """Write output ``tensor``'s ``data`` at ``where`` in one of ``owner``'s regions;
        its length, which must fit in the slice's byte size."""
        region, start = self._place(owner, where, tensor)
        view = memoryview(data).cast("B")
        if len(view) > where.byte_size:
            raise RegionError(f"tensor '{tensor}': {len(view)} bytes do not fit in the "
                              f"{where.byte_size} bytes given in shared memory region "
                              f"'{region.name}' ({SIZE_PARAM})")
        done = 0
        while done < len(view):
            done += os.pwrite(region.fd, view[done:], start + done)
        return len(view)

    def __iter__(self) -> Iterator[Region]:
        return iter(list(self._regions.values()))

    def close(self) -> None:
        """Unregister every region of every owner (the gateway's shutdown)."""
        for region in list(self._regions.values()):
            os.close(region.fd)
        self._regions.clear()


@dataclass(frozen=True)
class CallerRegions:
    """The registry as one caller sees it: reads and writes of ``owner``'s regions only."""

    registry: RegionRegistry
    owner: str

    def read(self, where: ShmSlice, tensor: str) -> np.ndarray:
        return self.registry.read(self.owner, where, tensor)

    def write(self, where: ShmSlice, tensor: str, data: bytes | memoryview) -> int:
        return self.registry.write(self.owner, where, tensor, data)

    def reference(self, where: ShmSlice, tensor: str, dtype: np.dtype,
                  shape: tuple[int, ...]) -> ShmRef:
        return self.registry.reference(self.owner, where, tensor, dtype, shape)
