"""Ending a handler's stream at once when its client goes away.

A handler that waits for a stream's chunks would otherwise notice a client that left only at
its next write, and the worker's generator would run on until then. :class:`CancelsWhenGone`
cancels the task inside :meth:`CancelsWhenGone.until_gone` as the connection closes: the wait
ends, leaving the stream's iteration cancels the stream, and the handler ends quietly.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class ClientGone(Exception):
    """The client closed the connection mid-stream: nothing more can be answered."""


class CancelsWhenGone:
    """A mixin for a tornado ``RequestHandler`` (listed before it)."""

    _gone_task: asyncio.Task | None = None  # while inside until_gone
    _gone = False

    def on_connection_close(self) -> None:
        self._gone = True
        if self._gone_task is not None and not self._gone_task.done():
            self._gone_task.cancel()
        super().on_connection_close()  # type: ignore[misc]

    @contextlib.asynccontextmanager
    async def until_gone(self) -> AsyncIterator[None]:
        """Run the part of a handler that waits for a stream and writes it: a client that
        leaves (or raises :class:`ClientGone`) ends it at once, quietly."""
        task = self._gone_task = asyncio.current_task()
        if self._gone and task is not None:
            task.cancel()  # it left before: the first wait ends at once
        try:
            yield
        except ClientGone:
            return
        except asyncio.CancelledError:
            if not self._gone:
                raise
            if task is not None and hasattr(task, "uncancel"):  # 3.11
                task.uncancel()  # our own cancel (the client left), not the loop's
        finally:
            self._gone_task = None
