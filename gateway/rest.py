"""The REST route: ``POST /{service}/{endpoint}`` with JSON or msgpack, and health paths.

A JSON body is an object of named inputs (arrays as nested lists); a msgpack
body (``application/msgpack``) is the codec's format with every tensor inline,
as ``zeroserve.Client`` sends it. The answer comes back in the same format
(or the one named by ``Accept``). Every error is ``{"error": message}`` with
the HTTP status that :mod:`gateway.errors` gives its status; :class:`BaseHandler` is
the error boundary of every HTTP handler of the gateway.
"""
from __future__ import annotations

import contextlib
import math
from types import TracebackType
from typing import Any

import tornado.iostream
import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import zeroserve
from gateway import docs_page, metrics, openapi
from gateway.access import Access
from gateway.api_keys import Identity
from gateway.broker_link import BrokerLink
from gateway.client_gone import CancelsWhenGone
from gateway.cors import PreflightRefused
from gateway.errors import RequestFailed, failure_of, http_headers, http_status
from gateway.invoke import call, find_endpoint
from gateway.json_body import JsonBodyError, dump_json, parse_json
from gateway.request_log import request_id_of
from gateway.rest_stream import (
    STREAM_HEADERS,
    Framing,
    asks_single_answer,
    chunk_frame,
    done_frame,
    error_frame,
    framing_of,
)
from gateway.stages import STAGES_HEADER, stages_json, wants_stages
from gateway.streams import StreamLimits, decode_chunk, open_stream, stream_limits, written
from zeroserve.config import StreamSettings
from zeroserve.wire import codec
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import Status
from zeroserve.wire.frontend import ControlOp

MSGPACK = "application/msgpack"
_MSGPACK_TYPES = (MSGPACK, "application/x-msgpack")
TIMEOUT_HEADER = "X-Zeroserve-Timeout"  # seconds, float
_TRACED_ROUTES = frozenset({"rest", "oip_http", "openai", "jobs"})  # calls of services: spans
VERSION_HEADER = "X-Zeroserve-Version"  # the service version to call; absent: as the split says


def answer_json(value: Any, what: str = "the answer") -> bytes:
    """An endpoint's or a task's answer as JSON: 400 naming the place when it holds NaN or
    infinity (JSON has neither; msgpack carries them), 500 if JSON cannot carry it at all."""
    try:
        return dump_json(value, what)
    except JsonBodyError as exc:
        raise RequestFailed(Status.BAD_REQUEST, str(exc)) from None
    except TypeError as exc:
        raise RequestFailed(Status.USER_ERROR, f"answer cannot be sent as JSON: {exc}") from None


def decode_body(body: bytes | memoryview, is_msgpack: bool, max_json_depth: int) -> Any:
    """The value of a JSON or msgpack (the codec's format) body; 400 if it does not parse,
    is nested deeper than ``max_json_depth`` or holds NaN or infinity (JSON)."""
    try:
        return codec.decode(body) if is_msgpack else parse_json(body, max_json_depth)
    except (codec.CodecError, ValueError) as exc:
        kind = "msgpack" if is_msgpack else "JSON"
        raise RequestFailed(Status.BAD_REQUEST, f"body is not valid {kind}: {exc}") from None


def sends_msgpack(headers: Any) -> bool:
    """Whether a request's ``Content-Type`` says its body is msgpack (else it is JSON)."""
    ctype = headers.get("Content-Type", "application/json").split(";")[0]
    return ctype.strip().lower() in _MSGPACK_TYPES


class BaseHandler(tornado.web.RequestHandler):
    """The error boundary and the API-key checks of every gateway handler.

    Whatever a handler method (or :meth:`prepare`) raises is answered here, through tornado's
    ``log_exception`` and ``write_error`` hooks: a known failure
    (:func:`gateway.errors.known_failure`) as ``{"error": message}`` with its HTTP status and
    headers, tornado's own ``HTTPError`` (405, say) with its reason, anything else as a 500
    logged once with its traceback.

    ``identity`` is the caller when API keys are on (None when they are off, or on a
    public path); :meth:`authorize` refuses a service the caller may not use.
    """

    link: BrokerLink
    metric_route = "other"  # the route label of this handler's requests in the metrics
    _span: Any = None  # the call's span while tracing is on (zeroserve.tracing)
    _traceparent = ""  # ... and the traceparent header that names it in the answer

    def initialize(self, link: BrokerLink, default_timeout_s: float,
                   max_timeout_s: float, max_body_bytes: int, access: Access,
                   stream: StreamSettings) -> None:
        self.link = link
        self.stream = stream
        self.default_timeout_s = default_timeout_s
        self.max_timeout_s = max_timeout_s
        self.max_body_bytes = max_body_bytes
        self.access = access
        self.identity: Identity | None = None
        self.metric_service = self.metric_endpoint = ""  # set once a known endpoint is named
        self.bytes_out = 0  # body bytes written (the request log's)
        self.stages: list | None = None  # the stages that answered, if the caller asked
        self.request_id: str | None = None  # the id answered with them (and logged)

    def flush(self, include_footers: bool = False) -> Any:
        self.bytes_out += sum(map(len, self._write_buffer))  # type: ignore[attr-defined]
        return super().flush(include_footers)

    def _finish_parts(self, parts: list[bytes | memoryview]) -> None:
        """Finish with the body ``parts`` written as they are (a large tensor's are views of
        its memory): the headers first, with the body's Content-Length, then each part, so
        that neither a joined body nor tornado's headers-and-body join copies them. One
        ``bytes`` part is simply the body."""
        if len(parts) == 1 and isinstance(parts[0], bytes):
            self.finish(parts[0])
            return
        if self._transforms:  # type: ignore[attr-defined]  # (none in the gateway)
            self.finish(b"".join(parts))
            return
        size = sum(map(len, parts))
        self.set_header("Content-Length", size)
        self.flush()
        connection = self.request.connection
        assert connection is not None
        for part in parts:
            if len(part):
                connection.write(part)  # type: ignore[arg-type]  # bytes or a memoryview
        self.bytes_out += size
        self.finish()

    def set_default_headers(self) -> None:
        cors = self.settings.get("cors")  # gateway.cors.CorsPolicy, None while CORS is off
        if cors is not None:
            for name, value in cors.answer_headers(self.request.headers.get("Origin")).items():
                self.set_header(name, value)
        if self._traceparent:  # again after an error's clear()
            self.set_header("traceparent", self._traceparent)

    def prepare(self) -> None:
        tracing = getattr(self.link, "tracing", None)  # (tests give no link)
        if tracing is not None and self.request.method == "POST" and \
                self.metric_route in _TRACED_ROUTES:
            self._span = tracing.begin(self.metric_route, self.request.headers.get)[0]
            self._traceparent = tracing.traceparent(self._span)
            self.set_header("traceparent", self._traceparent)
        if self.request.method == "OPTIONS":
            return  # a preflight carries no key (see options)
        if self.access.enforced and self.request.path not in self.access.public_paths:
            self.identity = self.access.identify(self.request.headers)

    def on_finish(self) -> None:
        if self._span is not None:
            self.link.tracing.end(self._span, self.get_status())  # type: ignore[union-attr]

    def options(self, *args: str) -> None:
        """A CORS preflight (:mod:`gateway.cors`): 204 with what is allowed, 403 for what is
        not; 405 while CORS is off."""
        cors = self.settings.get("cors")
        if cors is None:
            raise tornado.web.HTTPError(405)
        try:
            headers = cors.preflight(self.request.headers)
        except PreflightRefused as exc:
            raise RequestFailed(Status.FORBIDDEN, str(exc)) from None
        for name, value in headers.items():
            self.set_header(name, value)
        self.set_status(204)
        self.finish()

    def authorize(self, service: str) -> None:
        """Raise 403 unless the caller may use ``service``."""
        self.access.check(self.identity, service)

    def fail(self, failure: RequestFailed) -> None:
        """Answer with ``failure``: its HTTP status and headers, ``{"error": message}``."""
        self.set_status(http_status(failure.status))
        for name, value in http_headers(failure).items():
            self.set_header(name, value)
        self.answer_stages()
        self.set_header("Content-Type", "application/json")
        self.finish(dump_json({"error": str(failure)}))

    def answer_stages(self) -> None:
        """The request id and the stages in the answer's headers, if the caller asked."""
        if self.stages is not None:
            self.set_header("X-Request-Id", self.request_id or "")
            self.set_header(STAGES_HEADER, stages_json(self.stages))

    def log_exception(self, kind: type[BaseException] | None, value: BaseException | None,
                      tb: TracebackType | None) -> None:
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(kind, value, tb)
        # everything else is logged (if it must be) by write_error, which answers it

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs["exc_info"][1] if "exc_info" in kwargs else None
        if isinstance(exc, Exception) and not isinstance(exc, tornado.web.HTTPError):
            return self.fail(failure_of(exc, f"{self.request.method} {self.request.uri}"))
        self.set_header("Content-Type", "application/json")
        self.finish(dump_json({"error": self._reason}))

    def timeout_s(self) -> float:
        """The call's deadline in seconds: the timeout header, else the default; capped."""
        raw = self.request.headers.get(TIMEOUT_HEADER)
        if raw is None:
            return self.default_timeout_s
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not (math.isfinite(value) and value > 0):
            raise RequestFailed(Status.BAD_REQUEST, f"{TIMEOUT_HEADER} must be a positive "
                                                    f"number of seconds, got {raw!r}")
        return min(value, self.max_timeout_s)

    def version(self) -> int | None:
        """The service version the version header names (None: none, the traffic split's or
        the latest); 400 for one that is not an integer of at least 1."""
        raw = self.request.headers.get(VERSION_HEADER)
        if raw is None or not raw.strip():
            return None
        if not raw.strip().isdigit() or int(raw) < 1:
            raise RequestFailed(Status.BAD_REQUEST, f"{VERSION_HEADER} must be an integer of "
                                                    f"at least 1, got {raw!r}")
        return int(raw)

    def stream_limits(self) -> StreamLimits:
        """The limits of a stream this request starts: its deadline for the first chunk, and
        the stream settings unless the call's headers set its own (:func:`stream_limits`)."""
        return stream_limits(self.timeout_s(), self.stream, self.request.headers.get)


@tornado.web.stream_request_body
class BodyHandler(BaseHandler):
    """A POST handler whose body is read as it arrives: a body larger than ``max_body_bytes``
    (declared, or once inflated from gzip) is answered 413 without being kept in memory."""

    def prepare(self) -> None:
        self._chunks: list[bytes | memoryview] = []
        self._size = 0
        super().prepare()
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()

    def data_received(self, chunk: bytes | memoryview) -> None:  # type: ignore[override]
        if self._finished:
            return
        self._size += len(chunk)
        if self._size > self.max_body_bytes:
            self._chunks.clear()
            self.fail(self._too_large())  # tornado's boundary does not cover data_received
        else:
            self._chunks.append(chunk)

    def _too_large(self) -> RequestFailed:
        return RequestFailed(Status.PAYLOAD_TOO_LARGE, "the request body is larger than "
                             f"the gateway's limit of {self.max_body_bytes} bytes")

    @property
    def body(self) -> bytes | memoryview:
        """The whole request body (inflated when it came gzip-encoded); a large one is a
        view of the buffer it was read into (:mod:`gateway.http_connection`)."""
        if len(self._chunks) != 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0]

    async def post(self, *args: str) -> None:
        if not self._finished:  # else refused while the body arrived
            await self.handle(*args)

    async def handle(self, *args: str) -> None:
        raise NotImplementedError


class InvokeHandler(CancelsWhenGone, BodyHandler):
    """``POST /{service}/{endpoint}``: one answer, or for an endpoint that streams, its chunks
    in the framing ``Accept`` asks (:mod:`gateway.rest_stream`), each flushed as it comes."""

    metric_route = "rest"

    async def handle(self, service: str, endpoint: str) -> None:  # type: ignore[override]
        await self._invoke(service, endpoint)

    def _wants_msgpack(self, sent_msgpack: bool) -> bool:
        accept = self.request.headers.get("Accept", "")
        if any(t in accept for t in _MSGPACK_TYPES):
            return True
        return sent_msgpack and "application/json" not in accept

    async def _invoke(self, service: str, endpoint: str) -> None:
        self.authorize(service)
        info = await find_endpoint(self.link, service, endpoint, self.version())
        self.metric_service, self.metric_endpoint = info.service, info.name
        self.set_header(VERSION_HEADER, str(info.version))
        is_msgpack = sends_msgpack(self.request.headers)
        timeout_s = self.timeout_s()
        if not self.body:
            raise RequestFailed(Status.BAD_REQUEST, "empty body: expected an object of inputs")
        inputs = decode_body(self.body, is_msgpack, self.settings["max_json_depth"])
        if info.streams:
            if asks_single_answer(self.request.headers.get("Accept", "")):
                raise RequestFailed(Status.BAD_REQUEST, (
                    f"{info.service}.{info.name} streams: accept text/event-stream, "
                    f"application/x-ndjson or {Framing.MSGPACK.value} (in the SDK, iterate "
                    "client.stream(...) instead of call(...))"))
            return await self._stream(info, inputs)
        if wants_stages(self.request.headers.get(STAGES_HEADER)):
            self.stages = []
            self.request_id = request_id_of(self.request.headers.get("X-Request-Id"))
        value = await call(self.link, info, inputs, timeout_s, self.stages)
        self.answer_stages()
        if self._wants_msgpack(is_msgpack):
            self.set_header("Content-Type", MSGPACK)
            self._finish_parts(codec.encode_parts(value))
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(answer_json(value, f"the answer of {info.service}.{info.name}"))

    async def _stream(self, info: EndpointDescription, inputs: Any) -> None:
        """Answer with the endpoint's stream. A failure before its first chunk raises (the
        boundary answers it with its status); after it, it is the framing's error event. A
        client that goes away cancels the stream (:class:`~gateway.client_gone.CancelsWhenGone`)."""
        framing = framing_of(self.request.headers.get("Accept", ""))
        limits = self.stream_limits()
        what = f"a chunk of {info.service}.{info.name}"
        async with self.until_gone():
            chunks = await open_stream(self.link, info, inputs, limits)
            async with contextlib.aclosing(chunks):  # closing it cancels the stream
                chunk = await anext(chunks, None)
                frame = done_frame(framing, 0) if chunk is None else \
                    chunk_frame(framing, decode_chunk(chunk), what)
                self.set_header("Content-Type", framing.value)
                for name, value in STREAM_HEADERS.items():
                    self.set_header(name, value)
                sent = 0
                try:
                    while chunk is not None:
                        self.write(frame)
                        if not chunk.more_queued:  # chunks that came together go together
                            await written(self.flush(), limits)
                        sent += 1
                        chunk = await anext(chunks, None)
                        frame = done_frame(framing, sent) if chunk is None else \
                            chunk_frame(framing, decode_chunk(chunk), what)
                except tornado.iostream.StreamClosedError:
                    return  # the client went away; leaving the iteration cancels the stream
                except Exception as exc:  # the stream has begun: the error is its last event
                    failure = failure_of(exc, f"stream of {info.service}.{info.name}")
                    frame = error_frame(framing, str(failure), http_status(failure.status))
                self.finish(frame)


class NotFoundHandler(BaseHandler):
    """Every path that no route serves (the application's ``default_handler_class``): 404 as
    ``{"error": message}``, like every other error, instead of tornado's HTML page."""

    def prepare(self) -> None:
        raise RequestFailed(Status.NOT_FOUND, f"no route serves {self.request.method} "
                                              f"{self.request.path}")


class HealthHandler(BaseHandler):
    """``GET /healthz``: the gateway process is up."""

    def get(self) -> None:
        self.finish({"status": "ok"})


class ReadyHandler(BaseHandler):
    """``GET /readyz``: the broker answers and at least one worker serves. ``job_store`` says
    whether the broker's job store works (``{"ok", "error", "path"}``, from a ping): a failing
    one stops async jobs only, so the gateway stays ready for real-time calls. ``cluster`` is
    this gateway's cluster name (``zeroserve serve`` and a gateway about to share this port
    check it); a broker of another cluster counts as one that does not answer."""

    async def get(self) -> None:
        state = {"cluster": self.link.cluster, **self.link.describe()}
        workers = sum(state["services"].values())
        if self.link.alive:
            state["job_store"] = await self._job_store()
        if not self.link.alive:
            self.set_status(503)
            state["reason"] = (f"the broker refuses this gateway: {self.link.refusal}"
                               if self.link.refusal else "the broker does not answer")
        elif workers == 0:
            self.set_status(503)
            state["reason"] = "no worker has registered"
        self.set_header("Content-Type", "application/json")
        self.finish(dump_json(state))


    async def _job_store(self) -> Any:
        try:
            return (await self.link.control(ControlOp.PING, timeout_s=1.0)).get("job_store")
        except TimeoutError:
            return None


class ServicesHandler(BaseHandler):
    """``GET /v1/services``: the services the broker knows, their endpoints' schemas and how
    many workers serve each."""

    async def get(self) -> None:
        services = await self.access.visible_services(self.link, self.identity)
        self.set_header("Content-Type", "application/json")
        self.finish(dump_json({"services": {name: desc.to_map()
                                            for name, desc in services.items()},
                               "broker_alive": self.link.alive}))


class OpenApiHandler(BaseHandler):
    """``GET /openapi.json``: this gateway's routes for the services the caller may use."""

    async def get(self) -> None:
        services = await self.access.visible_services(self.link, self.identity)
        self.set_header("Content-Type", "application/json")
        self.finish(dump_json(openapi.describe(services, zeroserve.__version__)))


class MetricsHandler(BaseHandler):
    """``GET /metrics``: this gateway's Prometheus metrics."""

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(metrics.REGISTRY))


class DocsHandler(BaseHandler):
    """``GET /docs``: the OpenAPI description as a page (``gateway.docs_page``)."""

    async def get(self) -> None:
        services = await self.access.visible_services(self.link, self.identity)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(docs_page.render(openapi.describe(services, zeroserve.__version__)))


def handler_args(link: BrokerLink, default_timeout_s: float, max_timeout_s: float,
                 max_body_bytes: int, access: Access | None = None,
                 stream: StreamSettings | None = None) -> dict[str, Any]:
    """The ``initialize`` arguments of every gateway handler."""
    return {"link": link, "default_timeout_s": default_timeout_s,
            "max_timeout_s": max_timeout_s, "max_body_bytes": max_body_bytes,
            "access": access or Access(), "stream": stream or StreamSettings()}


def routes(args: dict[str, Any]) -> list:
    """The REST routes (``args`` from :func:`handler_args`)."""
    return [
        (r"/healthz", HealthHandler, args),
        (r"/readyz", ReadyHandler, args),
        (r"/v1/services", ServicesHandler, args),
        (r"/openapi.json", OpenApiHandler, args),
        (r"/docs", DocsHandler, args),
        (r"/metrics", MetricsHandler, args),
        (r"/([^/]+)/([^/]+)", InvokeHandler, args),
    ]
