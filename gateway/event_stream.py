"""A POST handler that answers with server-sent events: Triton's ``generate_stream`` and the
OpenAI-compatible routes.

:meth:`EventStreamHandler.start_events` sends the headers (status 200, ``text/event-stream``,
no caching or proxy buffering); :meth:`EventStreamHandler.send` writes one event and flushes
it within the stream's idle limit (:func:`gateway.streams.written`). A client that goes away
cancels the handler's task, so that the stream it reads is closed at once (and the worker's
generator with it), not at the next write.
"""
from __future__ import annotations

import tornado.iostream

from gateway.client_gone import CancelsWhenGone, ClientGone
from gateway.rest import BodyHandler
from gateway.streams import StreamLimits, written


class EventStreamHandler(CancelsWhenGone, BodyHandler):
    """A :class:`~gateway.rest.BodyHandler` whose answer may be a stream of events."""

    content_type = "text/event-stream"

    def start_events(self) -> None:
        """Begin the event stream (status 200); errors from here on are events."""
        self.set_header("Content-Type", self.content_type)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")

    async def send(self, event: bytes, limits: StreamLimits) -> None:
        """Write one event and flush it; :class:`ClientGone` if the client left, RequestFailed
        (504) if it did not read it within the idle limit."""
        self.write(event)
        try:
            await written(self.flush(), limits)
        except tornado.iostream.StreamClosedError:
            raise ClientGone() from None
