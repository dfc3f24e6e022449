"""A ZeroMQ socket driven by an asyncio loop without a future per message.

zmq.asyncio creates futures and callbacks for every send and receive; on the
hot path of a gateway or a worker that costs more than the routing itself.
:class:`LoopSocket` instead registers the socket's file descriptor with the
loop, drains every waiting message into a callback when it becomes readable,
and sends without blocking (the socket's send high-water mark is unlimited, so
a send only waits where ZeroMQ has no pipe yet; those are queued and flushed
when the socket turns writable).

The descriptor that ZeroMQ exposes is edge-triggered: any operation on the
socket may consume the edge, so after every send the socket is checked again
for waiting input.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import zmq

log = logging.getLogger("zeroserve")

NOBLOCK = int(zmq.NOBLOCK)  # a plain int: combining pyzmq's enum flags costs on the hot path
_SNDMORE = int(zmq.SNDMORE)


# pyzmq's compiled socket, under zmq.Socket's Python layer: that layer's send only adds the
# routing_id and group arguments of draft sockets, for 0.4 us a frame (measured here)
_base_send = zmq.backend.Socket.send
# frames below pyzmq's copy_threshold (64 KiB) are copied by send(copy=False) as well, after
# a memoryview and a size check that cost more than the copy of a routing frame
_COPY_BELOW = 65536


def send_message(sock: zmq.Socket, frames: list, flags: int = NOBLOCK) -> None:
    """Send one multipart message, frames as given: small bytes frames copied, larger ones,
    memoryviews and ``zmq.Frame`` never (keep their memory alive until sent). What
    ``send_multipart`` does, for a fifth of its cost: it combines pyzmq's enum flags for
    every frame and goes through the Python layer of ``zmq.Socket.send`` (11 us against
    2 us for a six-frame CHUNK, measured here)."""
    more = flags | _SNDMORE
    last = frames[-1]
    for frame in frames[:-1]:
        _base_send(sock, frame, more, frame.__class__ is bytes and len(frame) < _COPY_BELOW)
    _base_send(sock, last, flags, last.__class__ is bytes and len(last) < _COPY_BELOW)


def recv_message(sock: zmq.Socket, copied: int, flags: int = NOBLOCK) -> list:
    """Receive one multipart message: its first ``copied`` frames as bytes, the rest as
    ``zmq.Frame`` views (no copy). Routing frames are small and read often, so bytes are
    cheaper for them; payload frames may be large tensors, which are never copied. Each
    frame is received as a ``zmq.Frame``, whose ``more`` costs a tenth of asking the socket
    for RCVMORE (pyzmq turns the option into its enum every time): 6 us against 9 us for an
    eight-frame REQUEST, measured here."""
    recv = sock.recv
    frame = recv(flags, copy=False)
    parts: list = [frame.bytes if copied > 0 else frame]
    while frame.more:
        frame = recv(flags, copy=False)
        parts.append(frame.bytes if len(parts) < copied else frame)
    return parts


def recv_message_of(sock: zmq.Socket, copied: int, flags: int = NOBLOCK) -> tuple[list, str]:
    """:func:`recv_message`, and the ``User-Id`` that the ZAP handler gave the message's
    connection ("" without one)."""
    recv = sock.recv
    frame = recv(flags, copy=False)
    user = str(frame.get("User-Id") or "")
    parts: list = [frame.bytes if copied > 0 else frame]
    while frame.more:
        frame = recv(flags, copy=False)
        parts.append(frame.bytes if len(parts) < copied else frame)
    return parts, user


class LoopSocket:
    """One DEALER (or any) socket, its messages delivered to ``on_message(frames)``.

    The first ``copied`` frames of each message arrive as bytes, the rest as
    ``zmq.Frame`` (see :func:`recv_message`); ``on_message`` runs on the loop and
    must not block.
    """

    def __init__(self, sock: zmq.Socket, on_message: Callable[[list], None],
                 copied: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.sock = sock
        self._copied = copied
        self._on_message = on_message
        self._loop = loop or asyncio.get_running_loop()
        self._backlog: deque[list] = deque()
        self._check_scheduled = False
        fd = sock.getsockopt(zmq.FD)
        assert isinstance(fd, int)
        self._fd = fd
        self._loop.add_reader(self._fd, self._drain)
        self._closed = False

    def send(self, frames: list) -> None:
        """Queue ``frames`` for sending; never blocks the loop."""
        if self._closed:
            return
        if not self._backlog:
            try:
                send_message(self.sock, frames)
            except zmq.Again:
                self._backlog.append(frames)
                self._loop.call_later(0.005, self._flush)
        else:
            self._backlog.append(frames)
        self._schedule_check()

    def _flush(self) -> None:
        while self._backlog and not self._closed:
            try:
                send_message(self.sock, self._backlog[0])
            except zmq.Again:
                self._loop.call_later(0.005, self._flush)
                return
            self._backlog.popleft()
        self._schedule_check()

    def _schedule_check(self) -> None:
        if not self._check_scheduled:
            self._check_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._check_scheduled = False
        if self._closed:
            return
        sock, copied = self.sock, self._copied
        for _ in range(1000):
            try:
                frames = recv_message(sock, copied)
            except zmq.Again:
                return
            try:
                self._on_message(frames)
            except Exception:  # a handler bug must not stop the socket
                log.exception("error while handling a message")
        self._schedule_check()  # more waiting: yield to the loop, then go on

    def close(self, linger_ms: int = 0) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self.sock.close(linger_ms)
