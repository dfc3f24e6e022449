"""ZeroMQ sockets with the options every zeroserve daemon uses.

High-water marks are off (0, no limit): bounded queues are the broker's job,
where a full queue answers 503 at once, not ZeroMQ's, which would drop or
block silently. ``LINGER`` is 0 by default so that closing a socket never
waits for a peer that has gone.
"""
from __future__ import annotations

import zmq

from zeroserve.curve import Channel, Curve


def open_socket(context: zmq.Context, kind: int, *, curve: Curve | None = None,
                serves: Channel | None = None, linger: int | None = 0) -> zmq.Socket:
    """A new socket of ``kind`` with no high-water marks and ``linger`` (None: ZeroMQ's
    default); with ``curve``, a CURVE server of channel ``serves`` (the broker's sockets,
    whose peers are checked against the keys allowed on that channel) or else a client."""
    sock = context.socket(kind)
    if linger is not None:
        sock.setsockopt(zmq.LINGER, linger)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    if curve is not None:
        if serves is None:
            curve.client(sock)
        else:
            curve.server(sock, serves)
    return sock
