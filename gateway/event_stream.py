"""A POST handler that answers with server-sent events: Triton's ``generate_stream`` and the
OpenAI-compatible routes.

:meth:`EventStreamHandler.start_events` sends the headers (status 200, ``text/event-stream``,
no caching or proxy buffering); :meth:`EventStreamHandler.send` writes one event and flushes
it within the stream's idle limit (:func:`gateway.streams.written`). A client that goes away
cancels the handler's task, so that the stream it reads is closed at once (and the worker's
generator with it), not at the next write.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import tornado.iostream

from gateway.rest import BodyHandler
from gateway.streams import StreamLimits, written


class ClientGone(Exception):
    """The client closed the connection mid-stream: nothing more can be answered."""


class EventStreamHandler(BodyHandler):
    """A :class:`~gateway.rest.BodyHandler` whose answer may be a stream of events."""

    content_type = "text/event-stream"

    _task: asyncio.Task | None = None  # while inside :meth:`events`
    _gone = False

    def on_connection_close(self) -> None:
        self._gone = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        super().on_connection_close()

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

    @contextlib.asynccontextmanager
    async def events(self) -> AsyncIterator[None]:
        """Run the part of a handler that waits for a stream and writes it: a client that
        leaves ends it at once, quietly."""
        self._task = asyncio.current_task()
        if self._gone and self._task is not None:
            self._task.cancel()  # it left before: the first wait ends at once
        try:
            yield
        except ClientGone:
            return
        except asyncio.CancelledError:
            if not self._gone:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # our own cancel (the client left), not the loop's
        finally:
            self._task = None
