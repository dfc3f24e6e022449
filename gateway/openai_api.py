"""The OpenAI-compatible API: ``POST /v1/chat/completions``, ``POST /v1/completions`` and
``GET /v1/models[/{model}]``.

Models are the endpoints declared ``@zeroserve.api(openai="chat")`` or ``"completion"``
(names: :mod:`gateway.openai_models`). A request goes through the same broker path as every
call (validation, deadlines, API keys: ``Authorization: Bearer <key>`` is the zeroserve key);
bodies and answers are OpenAI's (:mod:`gateway.openai_wire`). ``stream`` true answers with
OpenAI's server-sent events, ``data: [DONE]`` last; ``max_tokens`` also bounds what the gateway
reads (it closes the stream at that many tokens). Every error has OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` and the HTTP status the rest of the gateway
gives it, so that the ``openai`` client raises its usual exceptions; an error after the first
chunk is an event carrying that object.
"""
from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import tornado.web

from gateway.client_gone import ClientGone
from gateway.endpoint_values import endpoint_values
from gateway.errors import RequestFailed, failure_of, http_headers, http_status
from gateway.event_stream import EventStreamHandler
from gateway.invoke import look_up, not_served
from gateway.json_body import dump_json
from gateway.openai_models import model_names, resolve
from gateway.openai_wire import (
    DONE,
    Answer,
    Kind,
    OpenAIError,
    OpenAIRequest,
    completion,
    error_body,
    finish_chunk,
    finish_reason,
    model_entry,
    model_list,
    parse_request,
    role_chunk,
    sse,
    text_chunk,
    token_text,
    usage_chunk,
)
from gateway.rest import BaseHandler, decode_body
from gateway.streams import StreamLimits
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import Status

_CODES = {Status.UNAUTHORIZED: "invalid_api_key", Status.NOT_FOUND: "model_not_found"}
_END = object()


class OpenAIErrors(BaseHandler):
    """Errors in OpenAI's shape (a mixin for the handlers below)."""

    metric_route = "openai"

    def fail(self, failure: RequestFailed) -> None:
        status = http_status(failure.status)
        self.set_status(status)
        for name, value in http_headers(failure).items():
            self.set_header(name, value)
        self._error(status, str(failure), None, _CODES.get(failure.status))

    def _error(self, status: int, message: str, param: str | None, code: str | None) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(dump_json(error_body(status, message, param, code)))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs["exc_info"][1] if "exc_info" in kwargs else None
        if isinstance(exc, OpenAIError):
            return self._error(exc.status, str(exc), exc.param, exc.code)
        if isinstance(exc, Exception) and not isinstance(exc, tornado.web.HTTPError):
            return self.fail(failure_of(exc, f"{self.request.method} {self.request.path}"))
        self._error(status_code, self._reason, None, None)


class ModelsHandler(OpenAIErrors):
    """``GET /v1/models`` and ``GET /v1/models/{model}``: the models the caller may use."""

    async def get(self, model: str | None = None) -> None:
        services = await self.access.visible_services(self.link, self.identity)
        names = model_names(services)
        self.set_header("Content-Type", "application/json")
        if model is None:
            self.finish(dump_json(model_list(names)))
        elif model not in names:
            raise OpenAIError(404, f"The model '{model}' does not exist", "model",
                              "model_not_found")
        else:
            self.finish(dump_json(model_entry(model)))


class CompletionsHandler(OpenAIErrors, EventStreamHandler):
    """``POST /v1/chat/completions`` (``kind`` chat) or ``POST /v1/completions``."""

    kind: Kind = "chat"
    id_prefix = "chatcmpl"

    async def handle(self) -> None:  # type: ignore[override]
        if not self.body:
            raise OpenAIError(400, "the request body is empty: expected a JSON object")
        request = parse_request(self.kind, decode_body(self.body, False,
                                                       self.settings["max_json_depth"]))
        info = await self._endpoint(request.model)
        self.authorize(info.service)
        self.metric_service, self.metric_endpoint = info.service, info.name
        limits = self.stream_limits()
        answer = Answer(self.kind, f"{self.id_prefix}-{uuid.uuid4().hex}", int(time.time()),
                        request.model, request.include_usage)
        values = endpoint_values(self.link, info, request.inputs({f.name for f in info.inputs}),
                                 limits)
        async with contextlib.aclosing(values), self.until_gone():
            if request.stream:
                await self._stream(values, answer, request, limits)
            else:
                await self._whole(values, answer, request)

    async def _endpoint(self, model: str) -> EndpointDescription:
        def find() -> EndpointDescription | None:
            found = resolve(model, self.kind, self.link.descriptions)
            return found if isinstance(found, EndpointDescription) else None
        found = await look_up(self.link, find)
        if found is not None:
            return found
        why = resolve(model, self.kind, self.link.descriptions)
        raise not_served(self.link, Status.NOT_FOUND, why if isinstance(why, str) else
                         f"The model '{model}' does not exist")

    async def _whole(self, values: AsyncGenerator[Any, None], answer: Answer,
                     request: OpenAIRequest) -> None:
        texts: list[str] = []
        size = 0
        async for value in values:
            texts.append(token_text(value))
            size += len(texts[-1])
            if size > self.max_body_bytes:  # the gateway's bound on what it holds for one call
                raise OpenAIError(413, f"the answer is longer than {self.max_body_bytes} "
                                       "characters; ask for it with stream true", "stream")
            if request.max_tokens is not None and len(texts) >= request.max_tokens:
                break
        self.set_header("Content-Type", "application/json")
        self.finish(dump_json(completion(
            answer, "".join(texts), finish_reason(len(texts), request.max_tokens),
            request.prompt_tokens, len(texts))))

    async def _stream(self, values: AsyncGenerator[Any, None], answer: Answer,
                      request: OpenAIRequest, limits: StreamLimits) -> None:
        value = await anext(values, _END)  # a failure here is still answered with a status
        text = None if value is _END else token_text(value)
        self.start_events()
        head = role_chunk(answer)
        if head is not None:
            self.write(sse(head))
        tokens = 0
        try:
            while text is not None:
                tokens += 1
                await self.send(sse(text_chunk(answer, text)), limits)
                if request.max_tokens is not None and tokens >= request.max_tokens:
                    break
                value = await anext(values, _END)
                text = None if value is _END else token_text(value)
        except ClientGone:
            raise
        except OpenAIError as exc:
            return await self.send(sse(error_body(exc.status, str(exc), exc.param, exc.code)),
                                   limits)
        except Exception as exc:
            failure = failure_of(exc, f"{self.request.method} {self.request.path} (stream)")
            return await self.send(sse(error_body(
                http_status(failure.status), str(failure), None, _CODES.get(failure.status))),
                limits)
        self.write(sse(finish_chunk(answer, finish_reason(tokens, request.max_tokens))))
        if request.include_usage:
            self.write(sse(usage_chunk(answer, request.prompt_tokens, tokens)))
        await self.send(DONE, limits)


class CompletionHandler(CompletionsHandler):
    """``POST /v1/completions``."""

    kind: Kind = "completion"
    id_prefix = "cmpl"


def openai_routes(args: dict[str, Any]) -> list:
    """The OpenAI-compatible routes (``args``: the handlers' ``initialize`` arguments); they
    go before the REST route, which would take ``/v1/completions`` for an endpoint."""
    return [
        (r"/v1/models", ModelsHandler, args),
        (r"/v1/models/([^/]+)", ModelsHandler, args),
        (r"/v1/chat/completions", CompletionsHandler, args),
        (r"/v1/completions", CompletionHandler, args),
    ]
