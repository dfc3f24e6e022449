"""The baseline of ``scripts/bench --profile broker-ceiling``: the least a load-balancing broker
can do, in plain pyzmq.

A ROUTER/ROUTER forwarder (one envelope read, round-robin, no queue, no deadlines, no
decoding) and a DEALER that echoes every message, each run in its own process over loopback
TCP. The same loops as ``../shared/bench/zmq_forwarder.py``, so that the profile's baseline is
the figure quoted against zeroserve's broker elsewhere.
"""
from __future__ import annotations

import multiprocessing as mp

import zmq


def forward(front: str, back: str) -> None:
    """Route ``[client id, request id, payload]`` to the next worker and answers back."""
    ctx = zmq.Context()
    f = ctx.socket(zmq.ROUTER)
    f.bind(front)
    b = ctx.socket(zmq.ROUTER)
    b.bind(back)
    workers: list[bytes] = []
    poller = zmq.Poller()
    poller.register(f, zmq.POLLIN)
    poller.register(b, zmq.POLLIN)
    while True:
        for sock, _ in poller.poll():
            while True:
                try:
                    msg = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if sock is b:
                    if len(msg) == 2:  # [worker id, READY]
                        workers.append(msg[0].bytes)
                    else:  # [worker id, client id, request id, payload]
                        f.send_multipart(msg[1:], copy=False)
                else:  # [client id, request id, payload]
                    w = workers[0]
                    workers.append(workers.pop(0))
                    b.send_multipart([w, *msg], copy=False)


def echo(back: str) -> None:
    """Announce itself, then send every message back as it came."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.connect(back)
    s.send_multipart([b"READY"])
    while True:
        s.send_multipart(s.recv_multipart(copy=False), copy=False)


def start(front: str, back: str) -> list[mp.Process]:
    """Start the forwarder and one echo worker, each in a process of its own."""
    procs = [mp.Process(target=forward, args=(front, back), daemon=True),
             mp.Process(target=echo, args=(back,), daemon=True)]
    for p in procs:
        p.start()
    return procs
