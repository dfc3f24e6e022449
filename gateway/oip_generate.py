"""Triton's generate extension over HTTP: ``POST /v2/models/{m}[/versions/{v}]/generate`` (one
JSON response) and ``.../generate_stream`` (server-sent events, one ``data: {json}`` per
chunk, in Triton's shape: :mod:`gateway.oip_generate_body`).

Both work on every model: an endpoint that does not stream answers one response. A failure
before the first response is ``{"error": message}`` with its HTTP status, as on every OIP
route; one after it (``generate_stream``) is the event ``data: {"error": message}``, after
which the stream ends (Triton's rule: the status was 200 already, so a reader must look for
the error object).
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from gateway.client_gone import ClientGone
from gateway.endpoint_values import endpoint_values
from gateway.errors import RequestFailed, failure_of
from gateway.event_stream import EventStreamHandler
from gateway.invoke import find_model
from gateway.json_body import dump_json
from gateway.oip_generate_body import (
    Outputs,
    generate_inputs,
    generate_response,
    joined,
    text_size,
)
from gateway.oip_models import ModelRef, endpoint_outputs
from gateway.rest import decode_body
from gateway.streams import StreamLimits
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import Status
from zeroserve.wire.oip_tensors import TensorError


class GenerateHandler(EventStreamHandler):
    """``POST /v2/models/{m}[/versions/{v}]/generate`` and ``.../generate_stream``."""

    metric_route = "oip_http"
    content_type = "text/event-stream; charset=utf-8"

    async def handle(self, model: str, version: str | None,  # type: ignore[override]
                     route: str) -> None:
        ref, info = await find_model(self.link, model, version, by_traffic=True)
        self.authorize(ref.service)
        self.metric_service, self.metric_endpoint = ref.service, ref.endpoint
        if not self.body:
            raise RequestFailed(Status.BAD_REQUEST, "empty body: expected a generate request "
                                                    "object")
        inputs = generate_inputs(decode_body(self.body, False, self.settings["max_json_depth"]),
                                 info)
        limits = self.stream_limits()
        values = endpoint_values(self.link, info, inputs, limits)
        async with contextlib.aclosing(values), self.until_gone():
            if route == "generate_stream":
                await self._stream(ref, info, values, limits)
            else:
                await self._one(ref, info, values)

    async def _one(self, ref: ModelRef, info: EndpointDescription,
                   values: AsyncGenerator[Any, None]) -> None:
        chunks: list[Outputs] = []
        size = 0
        async for value in values:
            chunks.append(_outputs(info, value))
            size += text_size(chunks[-1])
            if size > self.max_body_bytes:
                raise RequestFailed(Status.PAYLOAD_TOO_LARGE, (
                    f"the generated answer is larger than {self.max_body_bytes} bytes; use "
                    "generate_stream"))
        self.set_header("Content-Type", "application/json")
        self.finish(dump_json(generate_response(ref.name, joined(chunks), ref.version)))

    async def _stream(self, ref: ModelRef, info: EndpointDescription,
                      values: AsyncGenerator[Any, None], limits: StreamLimits) -> None:
        first = await anext(values, _END)  # a failure here is still answered with a status
        event = None if first is _END else _event(ref, info, first)
        self.start_events()
        try:
            while event is not None:
                await self.send(event, limits)
                value = await anext(values, _END)
                event = None if value is _END else _event(ref, info, value)
        except ClientGone:
            raise
        except Exception as exc:
            failure = failure_of(exc, f"{self.request.method} {self.request.path} (stream)")
            await self.send(b"data: " + dump_json({"error": str(failure)}) + b"\n\n", limits)
        self.finish()


_END = object()


def _outputs(info: EndpointDescription, value: Any) -> Outputs:
    try:
        return endpoint_outputs(info, value)
    except TensorError as exc:
        raise RequestFailed(Status.USER_ERROR, str(exc)) from None


def _event(ref: ModelRef, info: EndpointDescription, value: Any) -> bytes:
    return b"data: " + dump_json(generate_response(ref.name, _outputs(info, value),
                                                   ref.version)) + b"\n\n"
