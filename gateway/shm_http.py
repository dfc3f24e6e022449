"""Triton's system shared memory extension over HTTP (the registry: :mod:`gateway.shm_regions`).

Paths::

    GET  /v2/systemsharedmemory[/region/{name}]/status      [{name, key, offset, byte_size}]
    POST /v2/systemsharedmemory/region/{name}/register      {key, offset, byte_size}
    POST /v2/systemsharedmemory[/region/{name}]/unregister  (no name: all the caller's)
    *    /v2/cudasharedmemory/...                           400: not supported

Each call sees only the caller's regions (:func:`gateway.shm_regions.owner_of`). The
registry is the application setting ``shm_regions``; without it, or with an empty key
prefix, every call is a 400 saying that shared memory is off.
"""
from __future__ import annotations

import logging
from typing import Any

from gateway.errors import RequestFailed
from gateway.json_body import dump_json
from gateway.rest import BaseHandler, decode_body
from gateway.shm_regions import CallerRegions, RegionError, RegionRegistry, owner_of
from zeroserve.wire.envelope import Status

log = logging.getLogger("zeroserve.gateway")


def caller_regions(handler: BaseHandler) -> CallerRegions | None:
    """The shared memory regions of a handler's caller; None when the gateway has none."""
    registry: RegionRegistry | None = handler.settings.get("shm_regions")
    if registry is None or not registry.enabled:
        return None
    identity = handler.identity
    return CallerRegions(registry, owner_of(None if identity is None else identity.name,
                                            handler.request.remote_ip or ""))


class _ShmHandler(BaseHandler):
    def regions(self) -> CallerRegions:
        regions = caller_regions(self)
        if regions is None:
            raise RegionError("system shared memory is off on this gateway "
                              "(gateway.shm_key_prefix is empty)")
        return regions

    def reply(self, doc: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(dump_json(doc))


class StatusHandler(_ShmHandler):
    """``GET /v2/systemsharedmemory[/region/{name}]/status``."""

    def get(self, name: str | None = None) -> None:
        regions = self.regions()
        self.reply([r.status() for r in regions.registry.status(regions.owner, name or "")])


class RegisterHandler(_ShmHandler):
    """``POST /v2/systemsharedmemory/region/{name}/register`` with ``{key, offset,
    byte_size}``."""

    def post(self, name: str) -> None:
        regions = self.regions()
        body = decode_body(self.request.body, False, self.settings["max_json_depth"]) \
            if self.request.body else None
        if not isinstance(body, dict):
            raise RegionError("the register body must be a JSON object "
                              "{\"key\": ..., \"offset\": ..., \"byte_size\": ...}")
        region = regions.registry.register(regions.owner, name, body.get("key"),
                                           body.get("offset", 0), body.get("byte_size"))
        log.info("gateway: shared memory region '%s' (key %s, %d bytes at %d) registered by %s",
                 name, region.key, region.byte_size, region.offset, regions.owner)
        self.reply({})


class UnregisterHandler(_ShmHandler):
    """``POST /v2/systemsharedmemory[/region/{name}]/unregister``."""

    def post(self, name: str | None = None) -> None:
        regions = self.regions()
        gone = regions.registry.unregister(regions.owner, name or "")
        if gone:
            log.info("gateway: shared memory regions %s unregistered by %s", gone,
                     regions.owner)
        self.reply({})


class CudaSharedMemoryHandler(BaseHandler):
    """``/v2/cudasharedmemory/...``: refused, since the gateway has no CUDA shared memory
    (the extension is not listed)."""

    def _refuse(self, *args: str) -> None:
        raise RequestFailed(Status.BAD_REQUEST, "CUDA shared memory is not supported by this "
                            "server; use system shared memory (/v2/systemsharedmemory)")

    get = post = _refuse


_REGION = r"(?:/region/([^/]+))?"


def shm_routes(args: dict) -> list:
    """The shared memory routes; ``args`` are the handlers' ``initialize`` arguments."""
    return [
        (r"/v2/systemsharedmemory" + _REGION + r"/status/?", StatusHandler, args),
        (r"/v2/systemsharedmemory/region/([^/]+)/register/?", RegisterHandler, args),
        (r"/v2/systemsharedmemory" + _REGION + r"/unregister/?", UnregisterHandler, args),
        (r"/v2/cudasharedmemory(?:/.*)?", CudaSharedMemoryHandler, args),
    ]
