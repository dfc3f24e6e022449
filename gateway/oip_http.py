"""The Open Inference Protocol (KServe V2) over HTTP, with Triton's binary tensor extension.

Paths (each model path also with ``/versions/{v}``)::

    GET  /v2/health/live            GET  /v2/health/ready
    GET  /v2                        POST /v2/repository/index
    GET  /v2/models/{m}             GET  /v2/models/{m}/ready
    GET  /v2/models/{m}/config      POST /v2/models/{m}/infer
    POST /v2/models/{m}/generate    POST /v2/models/{m}/generate_stream (gateway.oip_generate)
    GET  /v2/models/stats           GET  /v2/models/{m}/stats
    /v2/systemsharedmemory/...      /v2/cudasharedmemory/... (gateway.shm_http)

Success is always exactly 200; every error is ``{"error": message}``. Requests go
through the same broker path as the REST route, batching included.
"""
from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.broker_link import BrokerLink
from gateway.errors import RequestFailed
from gateway.invoke import find_model
from gateway.json_body import dump_json
from gateway.oip_generate import GenerateHandler
from gateway.oip_infer import infer
from gateway.oip_models import (
    ModelRef,
    ServerIdentity,
    model_names,
    repository_index,
    server_metadata,
    versions_of,
)
from gateway.oip_models import config as model_config
from gateway.oip_models import metadata as model_metadata
from gateway.oip_rest_body import (
    InferRequest,
    encode_response,
    parse_request,
    write_shm_outputs,
)
from gateway.oip_stats import statistics
from gateway.rest import BaseHandler, BodyHandler, decode_body
from gateway.shm_http import caller_regions, shm_routes
from gateway.shm_regions import CallerRegions, RegionRegistry
from zeroserve.wire.envelope import Status
from zeroserve.wire.frontend import ControlOp

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics"]
SHM_EXTENSION = "system_shared_memory"


def extensions(regions: RegionRegistry | None) -> list[str]:
    """The extensions server metadata lists: :data:`EXTENSIONS`, and system shared memory
    when the gateway serves it (never CUDA shared memory)."""
    return EXTENSIONS + [SHM_EXTENSION] if regions is not None and regions.enabled \
        else EXTENSIONS
_COMPRESS_AT_BYTES = 1024  # smaller answers go uncompressed even when the client accepts it
# larger uncompressed answers are written in their parts, after the headers (a copy saved is
# worth a second write)
_WRITE_APART_AT_BYTES = 64 * 1024


class OipHandler(BaseHandler):
    """Shared helper: JSON answers."""

    def reply(self, doc: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(dump_json(doc))


class LiveHandler(OipHandler):
    def get(self) -> None:
        self.reply({"live": True})


class ServerReadyHandler(OipHandler):
    def get(self) -> None:
        if not self.link.alive:
            raise RequestFailed(Status.NO_WORKER, "the broker does not answer")
        if not any(info.workers for info in self.link.descriptions.values()):
            raise RequestFailed(Status.NO_WORKER, "no worker has registered")
        self.reply({"ready": True})


class ServerMetadataHandler(OipHandler):
    """``GET /v2``: the application setting ``oip_server`` (a :class:`ServerIdentity`) names
    the server."""

    def get(self) -> None:
        self.reply(server_metadata(self.settings.get("oip_server", ServerIdentity()),
                                   extensions(self.settings.get("shm_regions"))))


class RepositoryIndexHandler(OipHandler):
    """``POST /v2/repository/index``: every model, READY while a worker serves it; only the
    ready ones when the body is ``{"ready": true}``."""

    async def post(self) -> None:
        body = decode_body(self.request.body, False, self.settings["max_json_depth"]) \
            if self.request.body else {}
        ready_only = isinstance(body, dict) and body.get("ready") is True
        services = await self.access.visible_services(self.link, self.identity)
        self.reply(repository_index(services, ready_only))


class ModelHandler(OipHandler):
    """``GET /v2/models/{m}`` (metadata), ``.../ready`` and ``.../config``."""

    async def get(self, model: str, version: str | None, what: str | None) -> None:
        ref, info = await find_model(self.link, model, version)
        self.authorize(ref.service)
        if what == "config":
            return self.reply(model_config(ref, info))
        known = self.link.descriptions.get(ref.service)
        if what == "ready":
            at = None if known is None else known.at(ref.version)
            if at is None or not at.workers:
                raise RequestFailed(Status.NO_WORKER, f"model '{model}' has no worker")
            return self.reply({"name": ref.name, "ready": True})
        self.reply(model_metadata(ref, info, None if known is None else [
            str(v) for v in known.served_versions()]))


class StatsHandler(OipHandler):
    """``GET /v2/models/stats`` (every model the caller may see) and
    ``GET /v2/models/{m}[/versions/{v}]/stats``: Triton's statistics extension."""

    async def get(self, model: str | None = None, version: str | None = None) -> None:
        if model is None:
            refs = model_names(await self.access.visible_services(self.link, self.identity))
        else:
            ref, _ = await find_model(self.link, model, version)
            self.authorize(ref.service)
            refs = [ref] if version else versions_of(ref, self.link.descriptions)
        self.reply(await read_statistics(self.link, refs))


async def read_statistics(link: BrokerLink, models: list[ModelRef]) -> dict[str, Any]:
    """The statistics of ``models`` (:func:`gateway.oip_stats.statistics`), from the broker's
    figures: the same through every gateway of the cluster. 503 if the broker does not
    answer."""
    try:
        figures = await link.control(ControlOp.STATS)
    except TimeoutError:
        raise RequestFailed(Status.NO_WORKER,
                            f"the broker at {link.address} does not answer") from None
    return statistics(models, figures)


class InferHandler(BodyHandler):
    """``POST /v2/models/{m}[/versions/{v}]/infer``."""

    metric_route = "oip_http"

    async def handle(self, model: str, version: str | None) -> None:  # type: ignore[override]
        ref, info = await find_model(self.link, model, version, by_traffic=True)
        self.authorize(ref.service)
        self.metric_service, self.metric_endpoint = ref.service, ref.endpoint
        header, blobs = await infer(self.link, ref, info, _HttpBody(
            self._body(), self._header_length(), self.timeout_s, self.max_timeout_s,
            self.settings["max_json_depth"], caller_regions(self), str(ref.version)))
        if blobs:
            self.set_header(HEADER_LENGTH, str(len(header)))
            self.set_header("Content-Type", "application/octet-stream")
        else:
            self.set_header("Content-Type", "application/json")
        size = len(header) + sum(map(len, blobs))
        if size < _WRITE_APART_AT_BYTES or self._encoding(size) is not None:
            self.finish(self._compress(b"".join([header, *blobs])))
        else:
            self._finish_parts([header, *blobs])

    def _header_length(self) -> int | None:
        raw = self.request.headers.get(HEADER_LENGTH)
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise RequestFailed(Status.BAD_REQUEST,
                                f"{HEADER_LENGTH} must be an integer, got {raw!r}") from None

    def _body(self) -> bytes | memoryview:
        body = self.body
        encoding = self.request.headers.get("Content-Encoding", "").strip().lower()
        if encoding == "deflate":  # tornado's decompress_request handles gzip only
            inflater = zlib.decompressobj()
            try:
                body = inflater.decompress(body, self.max_body_bytes + 1)
            except zlib.error as exc:
                raise RequestFailed(Status.BAD_REQUEST,
                                    f"body is not valid deflate data: {exc}") from None
            if len(body) > self.max_body_bytes or inflater.unconsumed_tail:
                raise RequestFailed(Status.PAYLOAD_TOO_LARGE, "the inflated body is larger "
                                    f"than the limit of {self.max_body_bytes} bytes")
            if not inflater.eof:
                raise RequestFailed(Status.BAD_REQUEST, "body is not valid deflate data: "
                                                        "it ends early")
        elif encoding not in ("", "identity", "gzip"):
            raise RequestFailed(Status.BAD_REQUEST, f"Content-Encoding {encoding!r} is not "
                                                    "supported; use gzip or deflate")
        return body

    def _encoding(self, size: int) -> str | None:
        """The encoding an answer of ``size`` bytes goes in: "gzip" or "deflate" as the
        client accepts them, None (as it is) below ``_COMPRESS_AT_BYTES`` or for neither."""
        if size < _COMPRESS_AT_BYTES:
            return None
        accepted = self.request.headers.get("Accept-Encoding", "").lower()
        return next((e for e in ("gzip", "deflate") if e in accepted), None)

    def _compress(self, body: bytes) -> bytes:
        encoding = self._encoding(len(body))
        if encoding is None:
            return body
        self.set_header("Content-Encoding", encoding)
        return gzip.compress(body, compresslevel=1) if encoding == "gzip" \
            else zlib.compress(body, 1)


@dataclass
class _HttpBody:
    """Triton's HTTP body (JSON, and binary tensors after it) both ways; the request's
    ``timeout`` parameter, when given, replaces the timeout header (capped). Tensors in
    shared memory are read from and written to the caller's ``regions``; the answer names the
    model's ``version`` that ran."""

    body: bytes | memoryview
    header_length: int | None
    header_timeout_s: Callable[[], float]
    max_timeout_s: float
    max_json_depth: int
    regions: CallerRegions | None = None
    version: str = "1"

    def parse(self) -> InferRequest:
        request = parse_request(self.body, self.header_length, self.max_json_depth)
        return request

    def deadline_s(self, requested_us: int | None) -> float:
        timeout_s = self.header_timeout_s()  # checked even when the parameter replaces it
        return timeout_s if requested_us is None else min(requested_us / 1e6,
                                                           self.max_timeout_s)

    def encode(self, model: str, request: InferRequest,
               outputs: list[tuple[str, np.ndarray]]) -> tuple[bytes, list]:
        write_shm_outputs(request, outputs, self.regions)
        return encode_response(model, self.version, request, outputs)


_MODEL = r"/v2/models/([^/]+)(?:/versions/([^/]+))?"


def oip_routes(args: dict) -> list:
    """The OIP routes; ``args`` are the handlers' ``initialize`` arguments."""
    return [
        (r"/v2/health/live", LiveHandler, args),
        (r"/v2/health/ready", ServerReadyHandler, args),
        (r"/v2/?", ServerMetadataHandler, args),
        (r"/v2/repository/index", RepositoryIndexHandler, args),
        (r"/v2/models/stats/?", StatsHandler, args),
        (_MODEL + r"/stats/?", StatsHandler, args),
        (_MODEL + r"/infer", InferHandler, args),
        (_MODEL + r"/(generate|generate_stream)", GenerateHandler, args),
        (_MODEL + r"(?:/(ready|config))?/?", ModelHandler, args),
        *shm_routes(args),
    ]
