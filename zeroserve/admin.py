"""Operator calls on the broker's frontend (stats, models), for `zeroserve status` and tests."""
from __future__ import annotations

import os

import zmq

from zeroserve import protocol as p
from zeroserve.curve import Curve


def control(address: str, op: p.ControlOp, args: dict | None = None,
            timeout_s: float = 3.0, curve: Curve | None = None) -> dict:
    """Make one control call on the broker at ``address`` (as a CURVE client when ``curve``
    is given); raise TimeoutError if it is silent."""
    context: zmq.Context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.client(sock)
    try:
        sock.connect(address)
        request_id = os.urandom(8)
        sock.send_multipart(p.Control(request_id, op, args or {}).to_frames())
        if not sock.poll(int(timeout_s * 1000)):
            raise TimeoutError(f"broker at {address} did not answer within {timeout_s}s")
        command, rest = p.split_command(sock.recv_multipart())
        reply = p.parse_reply(rest)
        return p.unpack_map(reply.meta, "control answer")
    finally:
        sock.close(0)


def broker_stats(address: str, timeout_s: float = 3.0, curve: Curve | None = None) -> dict:
    """The broker's statistics: workers, queues and per-endpoint batching figures."""
    return control(address, p.ControlOp.STATS, timeout_s=timeout_s, curve=curve)
