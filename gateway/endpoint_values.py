"""An endpoint's answer as values, whether it streams or not: what the front ends that serve
both kinds alike (Triton's generate extension, the OpenAI-compatible routes) iterate."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from gateway.broker_link import BrokerLink
from gateway.invoke import call
from gateway.streams import StreamLimits, decode_chunk, open_stream
from zeroserve.wire.descriptions import EndpointDescription


async def endpoint_values(link: BrokerLink, info: EndpointDescription, inputs: Any,
                          limits: StreamLimits) -> AsyncGenerator[Any, None]:
    """The decoded chunks of a streaming endpoint, or the one answer of any other. Every
    failure before the first value (bad inputs included) is raised by the first
    ``__anext__``; closing the iterator early cancels the stream."""
    if not info.streams:
        yield await call(link, info, inputs, limits.first_s)
        return
    chunks = await open_stream(link, info, inputs, limits)
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            yield decode_chunk(chunk)
