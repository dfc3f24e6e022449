"""The broker's job sockets: one PUSH per worker lane, and one PULL sink for every lane's events.

A PUSH socket load-balances blindly, round-robin over its peers, so a single
PUSH could not send a job to the worker that has a free job slot. Each worker
lane therefore binds its own PULL (jobs in) and PUSH (events out) and names
both in READY; the broker connects one PUSH to each lane's PULL, so every job
goes exactly where a slot is free, and connects its single PULL sink to every
lane's PUSH, fair-queuing all events. Because the lane binds, its events wait
in the worker while no broker is connected (a restart) and flow to the new
broker as soon as it connects.
"""
from __future__ import annotations

import logging

import zmq

from zeroserve.curve import Channel, Curve
from zeroserve.sockets import open_socket

log = logging.getLogger("zeroserve.broker")


class JobSockets:
    """Implements ``broker.jobs.desk.JobChannels`` on ZeroMQ; ``sink`` is polled by the daemon."""

    def __init__(self, context: zmq.Context, curve: Curve | None = None) -> None:
        self.context = context
        self.curve = curve
        self.sink = open_socket(context, zmq.PULL, curve=curve, serves=Channel.JOBS)
        self._push: dict[str, zmq.Socket] = {}
        self._events: dict[str, str] = {}  # worker id -> the lane's event address

    def open_lane(self, worker_id: str, pull: str, push: str) -> None:
        """Connect to a lane (again, if the worker registered before)."""
        self.stop_dispatch(worker_id)
        sock = open_socket(self.context, zmq.PUSH, curve=self.curve, serves=Channel.JOBS)
        sock.connect(pull)
        self._push[worker_id] = sock
        if self._events.get(worker_id) != push:
            self.stop_events(worker_id)
            self.sink.connect(push)
            self._events[worker_id] = push

    def stop_dispatch(self, worker_id: str) -> None:
        """Close the PUSH to a lane; what it had not sent yet is dropped (leases cover it)."""
        sock = self._push.pop(worker_id, None)
        if sock is not None:
            sock.close(0)

    def stop_events(self, worker_id: str) -> None:
        """Stop listening to a lane's events."""
        address = self._events.pop(worker_id, None)
        if address is not None:
            try:
                self.sink.disconnect(address)
            except zmq.ZMQError as exc:
                log.info("broker: disconnecting the job sink from %s: %s", address, exc)

    def send(self, worker_id: str, frames: list) -> None:
        """Send a JOB or CANCEL to a lane (dropped if the lane is gone)."""
        sock = self._push.get(worker_id)
        if sock is not None:
            sock.send_multipart(frames, copy=False)

    def close(self) -> None:
        for worker_id in list(self._push):
            self.stop_dispatch(worker_id)
        self.sink.close(0)
