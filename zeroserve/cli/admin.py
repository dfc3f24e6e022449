"""Operator calls on the broker's frontend (stats, models), for `zeroserve status` and tests."""
from __future__ import annotations

import os

import zmq

from zeroserve.curve import Curve
from zeroserve.sockets import open_socket
from zeroserve.wire.envelope import split_command, unpack_map
from zeroserve.wire.frontend import Control, ControlOp, parse_reply


def control(address: str, op: ControlOp, args: dict | None = None,
            timeout_s: float = 3.0, curve: Curve | None = None) -> dict:
    """Make one control call on the broker at ``address`` (as a CURVE client when ``curve``
    is given); raise TimeoutError if it is silent."""
    context: zmq.Context = zmq.Context.instance()
    sock = open_socket(context, zmq.DEALER, curve=curve)
    try:
        sock.connect(address)
        request_id = os.urandom(8)
        sock.send_multipart(Control(request_id, op, args or {}).to_frames())
        if not sock.poll(int(timeout_s * 1000)):
            raise TimeoutError(f"broker at {address} did not answer within {timeout_s}s")
        command, rest = split_command(sock.recv_multipart())
        reply = parse_reply(rest)
        return unpack_map(reply.meta, "control answer")
    finally:
        sock.close(0)


def broker_stats(address: str, timeout_s: float = 3.0, curve: Curve | None = None) -> dict:
    """The broker's statistics: workers, queues and per-endpoint batching figures."""
    return control(address, ControlOp.STATS, timeout_s=timeout_s, curve=curve)
