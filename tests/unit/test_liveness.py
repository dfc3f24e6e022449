"""The one liveness rule (broker, worker, gateway), with plain-float time: alive through the
window's last instant, dead after it, dead before anything is heard."""
import math

from zeroserve.liveness import Liveness


def test_peer_never_heard_from_is_dead():
    peer = Liveness(3.0)
    assert peer.dead(0.0) and not peer.alive(0.0)
    assert peer.silent_for(100.0) == math.inf


def test_peer_is_alive_through_the_last_instant_of_its_window_and_dead_after():
    peer = Liveness(3.0, heard_at=10.0)
    assert peer.alive(10.0) and peer.alive(13.0)
    assert peer.dead(13.000001)
    assert peer.silent_for(12.5) == 2.5


def test_hearing_from_a_peer_starts_its_window_again():
    peer = Liveness(3.0, heard_at=0.0)
    peer.heard(2.5)
    assert peer.alive(5.5) and peer.dead(5.75)
    assert peer.last_heard == 2.5


def test_window_is_interval_times_missed_beats():
    peer = Liveness.of_heartbeats(0.2, 3, heard_at=0.0)
    assert peer.window_s == 0.2 * 3
    assert peer.alive(0.6) and peer.dead(0.61)


def test_a_dead_peer_that_speaks_again_is_alive():
    peer = Liveness(1.0, heard_at=0.0)
    assert peer.dead(5.0)
    peer.heard(5.0)
    assert peer.alive(5.5)


def test_broker_evicts_a_worker_only_once_silent_past_the_window():
    from broker.registry import WorkerRegistry

    reg = WorkerRegistry(3.0)
    reg.register(b"w0", "w0", "svc", {"e": {}}, 1, now=0.0)
    assert reg.expired(3.0) == []
    reg.touch(b"w0", 2.0)
    assert reg.expired(5.0) == []
    assert [w.worker_id for w in reg.expired(5.5)] == ["w0"]


def test_gateway_says_the_broker_is_dead_until_it_hears_from_it():
    from gateway.broker_link import BrokerLink
    from zeroserve.wire.envelope import Status, pack_map
    from zeroserve.wire.frontend import Reply

    link = BrokerLink("tcp://127.0.0.1:9", heartbeat_s=60.0, liveness=3, schema_refresh_s=1.0)
    try:
        assert not link.alive
        link._on_message(Reply(b"\0" * 8, Status.OK, pack_map({})).to_frames())
        assert link.alive
    finally:
        link.context.term()
