"""The Open Inference Protocol (KServe V2) over HTTP, with Triton's binary tensor extension.

Paths (each model path also with ``/versions/{v}``)::

    GET  /v2/health/live            GET  /v2/health/ready
    GET  /v2                        POST /v2/repository/index
    GET  /v2/models/{m}             GET  /v2/models/{m}/ready
    GET  /v2/models/{m}/config      POST /v2/models/{m}/infer

Success is always exactly 200; every error is ``{"error": message}``. Requests go
through the same broker path as the REST route, batching included.
"""
from __future__ import annotations

import gzip
import zlib
from typing import Any

import zeroserve
from gateway.invoke import RequestFailed, call, find_model
from gateway.json_body import dump_json, parse_json
from gateway.oip_models import VERSION, endpoint_inputs, endpoint_outputs, repository_index
from gateway.oip_models import config as model_config
from gateway.oip_models import metadata as model_metadata
from gateway.oip_rest_body import encode_response, parse_request, select_outputs
from gateway.rest import BaseHandler, BodyHandler
from zeroserve.wire.envelope import Status
from zeroserve.wire.oip_tensors import TensorError

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository"]
_COMPRESS_AT_BYTES = 1024  # smaller answers go uncompressed even when the client accepts it


class OipHandler(BaseHandler):
    """Shared helpers: JSON answers and the error mapping."""

    def reply(self, doc: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(dump_json(doc))

    def not_ready(self, message: str) -> None:
        self.fail(RequestFailed(Status.NO_WORKER, message))


class LiveHandler(OipHandler):
    def get(self) -> None:
        self.reply({"live": True})


class ServerReadyHandler(OipHandler):
    def get(self) -> None:
        if not self.link.alive:
            return self.not_ready("the broker does not answer")
        if not any(info.get("workers") for info in self.link.services.values()):
            return self.not_ready("no worker has registered")
        self.reply({"ready": True})


class ServerMetadataHandler(OipHandler):
    def get(self) -> None:
        self.reply({"name": "zeroserve", "version": zeroserve.__version__,
                    "extensions": EXTENSIONS})


class RepositoryIndexHandler(OipHandler):
    """``POST /v2/repository/index``: every model, READY while a worker serves it; only the
    ready ones when the body is ``{"ready": true}``."""

    async def post(self) -> None:
        try:
            body = parse_json(self.request.body or b"{}", self.settings["max_json_depth"])
        except ValueError as exc:
            return self.fail(RequestFailed(Status.BAD_REQUEST, f"body is not valid JSON: {exc}"))
        ready_only = isinstance(body, dict) and body.get("ready") is True
        services = await self.access.visible_services(self.link, self.identity)
        self.reply(repository_index(services, ready_only))


class ModelHandler(OipHandler):
    """``GET /v2/models/{m}`` (metadata), ``.../ready`` and ``.../config``."""

    async def get(self, model: str, version: str | None, what: str | None) -> None:
        try:
            ref, info = await find_model(self.link, model, version)
            self.authorize(ref.service)
        except RequestFailed as exc:
            return self.fail(exc)
        if what == "config":
            return self.reply(model_config(ref, info))
        if what == "ready":
            if not self.link.services.get(ref.service, {}).get("workers"):
                return self.not_ready(f"model '{model}' has no worker")
            return self.reply({"name": ref.name, "ready": True})
        self.reply(model_metadata(ref, info))


class InferHandler(BodyHandler):
    """``POST /v2/models/{m}[/versions/{v}]/infer``."""

    metric_route = "oip_http"

    async def handle(self, model: str, version: str | None) -> None:  # type: ignore[override]
        ref, info = await find_model(self.link, model, version)
        self.authorize(ref.service)
        self.metric_service, self.metric_endpoint = ref.service, ref.endpoint
        try:
            request = parse_request(self._body(), self._header_length(),
                                    self.settings["max_json_depth"])
            inputs = endpoint_inputs(info, request.inputs)
        except TensorError as exc:
            raise RequestFailed(Status.BAD_REQUEST, str(exc)) from None
        timeout_s = self.timeout_s()
        if request.timeout_us is not None:
            timeout_s = min(request.timeout_us / 1e6, self.max_timeout_s)
        value = await call(self.link, info, inputs, timeout_s)
        try:
            produced = endpoint_outputs(info, value)
        except TensorError as exc:
            raise RequestFailed(Status.USER_ERROR, str(exc)) from None
        try:
            header, blobs = encode_response(ref.name, VERSION, request,
                                            select_outputs(produced, request.outputs))
        except TensorError as exc:
            raise RequestFailed(Status.BAD_REQUEST, str(exc)) from None
        if blobs:
            self.set_header(HEADER_LENGTH, str(len(header)))
            self.set_header("Content-Type", "application/octet-stream")
        else:
            self.set_header("Content-Type", "application/json")
        self.finish(self._compress(b"".join([header, *blobs])))

    def _header_length(self) -> int | None:
        raw = self.request.headers.get(HEADER_LENGTH)
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise RequestFailed(Status.BAD_REQUEST,
                                f"{HEADER_LENGTH} must be an integer, got {raw!r}") from None

    def _body(self) -> bytes:
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

    def _compress(self, body: bytes) -> bytes:
        accepted = self.request.headers.get("Accept-Encoding", "").lower()
        if len(body) < _COMPRESS_AT_BYTES:
            return body
        if "gzip" in accepted:
            self.set_header("Content-Encoding", "gzip")
            return gzip.compress(body, compresslevel=1)
        if "deflate" in accepted:
            self.set_header("Content-Encoding", "deflate")
            return zlib.compress(body, 1)
        return body


_MODEL = r"/v2/models/([^/]+)(?:/versions/([^/]+))?"


def oip_routes(args: dict) -> list:
    """The OIP routes; ``args`` are the handlers' ``initialize`` arguments."""
    return [
        (r"/v2/health/live", LiveHandler, args),
        (r"/v2/health/ready", ServerReadyHandler, args),
        (r"/v2/?", ServerMetadataHandler, args),
        (r"/v2/repository/index", RepositoryIndexHandler, args),
        (_MODEL + r"/infer", InferHandler, args),
        (_MODEL + r"(?:/(ready|config))?/?", ModelHandler, args),
    ]
