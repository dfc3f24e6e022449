"""The broker is assembled from its container: the typed sections, the injected clocks and the
injected ZeroMQ context (an inproc peer in that context reaches it; no TCP port is taken)."""
from __future__ import annotations

import zmq

from broker.daemon import assemble
from zeroserve.config import JobsSettings, load_settings
from zeroserve.container import Container


def test_the_broker_uses_the_containers_sections_clock_and_context(tmp_path):
    settings = load_settings(overrides={"broker.frontend": "inproc://front",
                                        "broker.backend": "inproc://back",
                                        "broker.max_dispatches": 5,
                                        "heartbeat.liveness": 4}, environ={})
    parts = Container.of(settings)
    parts.clock.set(lambda: 1234.5)
    parts.jobs.set(JobsSettings(store_path=str(tmp_path / "jobs.sqlite3"), lease_s=7.0))
    daemon = assemble(parts)
    try:
        assert daemon.context is parts.zmq_context.get()
        assert daemon.core.started == 1234.5
        assert daemon.core.config.max_dispatches == 5 and daemon.core.config.liveness == 4
        assert daemon.jobs.config.store_path == str(tmp_path / "jobs.sqlite3")
        assert daemon.jobs.config.policy.lease_s == 7.0
        assert daemon.bind() == ("inproc://front", "inproc://back")
        peer = parts.zmq_context.get().socket(zmq.DEALER)
        peer.connect("inproc://front")  # only a socket of the same context can
        peer.send(b"hello")
        assert daemon.frontend.poll(2000)
        peer.close(0)
    finally:
        daemon.close()
        parts.zmq_context.get().term()


def test_without_a_store_path_the_job_store_is_one_per_frontend(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    parts = Container.of(load_settings(overrides={"broker.frontend": "inproc://f2",
                                                  "broker.backend": "inproc://b2"},
                                       environ={}))
    daemon = assemble(parts)
    try:
        path = daemon.jobs.config.store_path
        assert path.startswith(str(tmp_path / "zeroserve")) and "f2" in path
    finally:
        daemon.close()
        parts.zmq_context.get().term()
