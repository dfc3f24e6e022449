"""One stream as its caller's broker link sees it (a gateway's, or a worker's dependency
link): chunks in, credit and cancel out.

The link hands each CHUNK and the final REPLY of the stream's request to its
:class:`StreamCall`; the front end (or the calling endpoint) awaits them with
:meth:`StreamCall.next` and says when its client has taken a chunk (:meth:`StreamCall.took`).
Credit goes back once every chunk that arrived has been taken, so the worker's window refills
as fast as the client reads and no faster, and one CREDIT covers a whole burst. No sockets
here: frames go out through the ``send`` callable the link gives.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from zeroserve.wire.envelope import Status
from zeroserve.wire.frontend import Reply, error_reply
from zeroserve.wire.stream import Cancel, Chunk, Chunks, Credit


class StreamCall:
    """The events of one stream, in order: chunks, then one REPLY (its end or its error).

    ``send`` sends frames to the broker; ``done`` is called once, when the stream has
    ended or been cancelled (the link forgets it then)."""

    def __init__(self, request_id: bytes, frames: list, send: Callable[[list], None],
                 done: Callable[[StreamCall], None]) -> None:
        self.request_id = request_id
        self.frames = frames  # the REQUEST, kept to send it again to a restarted broker
        self._send = send
        self._done = done
        self._chunks: deque[Chunk] = deque()
        self._end: Reply | None = None
        self._wake = asyncio.Event()
        self._next_seq = 0
        self._taken_chunks = 0
        self._taken_bytes = 0

    @property
    def received(self) -> int:
        """Chunks that arrived so far."""
        return self._next_seq

    @property
    def ended(self) -> bool:
        return self._end is not None

    # ------------------------------------------------------------ from the broker

    def arrive(self, chunks: Chunks) -> None:
        """A CHUNK message for this stream. Chunks out of order (a lost message) end the
        stream with an error rather than passing on a stream with a hole in it."""
        if self.ended:
            return
        if chunks.first != self._next_seq:
            self._send(Cancel(self.request_id).to_frames())
            self.finish(error_reply(self.request_id, Status.INTERNAL, (
                f"stream chunk {chunks.first} arrived where {self._next_seq} was due: the "
                "stream is incomplete")))
            return
        arrived = chunks.chunks()
        self._next_seq += len(arrived)
        self._chunks.extend(arrived)
        self._wake.set()

    def finish(self, reply: Reply) -> None:
        """The stream's REPLY: status OK at its end, an error status otherwise."""
        if self.ended:
            return
        self._end = reply
        self._wake.set()
        self._done(self)

    # ------------------------------------------------------------ to the front end

    async def next(self, timeout_s: float) -> Chunk | Reply:
        """The next chunk, or the final REPLY once every chunk was handed out; TimeoutError
        if nothing comes within ``timeout_s``."""
        while not self._chunks and self._end is None:
            self._wake.clear()
            await asyncio.wait_for(self._wake.wait(), max(timeout_s, 0.0))
        if self._chunks:
            chunk = self._chunks.popleft()
            chunk.more_queued = bool(self._chunks)
            return chunk
        assert self._end is not None
        return self._end

    def took(self, chunk: Chunk) -> None:
        """The client has taken ``chunk``; credit the worker once nothing else is waiting."""
        self._taken_chunks += 1
        self._taken_bytes += chunk.nbytes
        if not self._chunks and not self.ended:
            self._send(Credit(self.request_id, self._taken_chunks, self._taken_bytes)
                       .to_frames())
            self._taken_chunks = self._taken_bytes = 0

    def cancel(self) -> None:
        """The caller went away (or a limit passed): the worker closes the generator. Does
        nothing once the stream has ended."""
        if self.ended:
            return
        self._send(Cancel(self.request_id).to_frames())
        self.finish(error_reply(self.request_id, Status.CANCELLED, "the stream was cancelled"))
