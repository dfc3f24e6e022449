"""cluster.name on the wire (READY, CONTROL, a refusing DISCONNECT), its defaults, and the
bounded memory of the broker's refusals."""
import asyncio
import time

import pytest

from broker import admission
from broker.admission import ClusterAdmission
from gateway.broker_link import BrokerLink
from zeroserve.cli.embedded import cluster_name
from zeroserve.config import Settings, load_settings
from zeroserve.wire.backend import Ready, disconnect, parse_disconnect, parse_ready
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import ProtocolError, Status, pack_map, split_command
from zeroserve.wire.frontend import Control, ControlOp, error_message, parse_control

ENDPOINTS = {"predict": EndpointDescription("svc", "predict")}


def test_ready_carries_the_cluster_and_an_old_ready_names_none():
    ready = parse_ready(split_command(Ready("w", "svc", ENDPOINTS, 1, cluster="a")
                                      .to_frames())[1])
    assert ready.cluster == "a"
    assert parse_ready(split_command(Ready("w", "svc", ENDPOINTS, 1).to_frames())[1]).cluster == ""
    body = {"worker_id": "w", "service": "svc", "endpoints": {"predict": {}}, "slots": 1,
            "cluster": 7}
    with pytest.raises(ProtocolError, match="cluster"):
        parse_ready([pack_map(body)])


def test_control_carries_the_cluster_outside_the_ops_args():
    ctl = parse_control(split_command(Control(b"1", ControlOp.JOB_LIST, {"limit": 5}, "a")
                                      .to_frames())[1])
    assert (ctl.cluster, ctl.args) == ("a", {"limit": 5})
    plain = parse_control(split_command(Control(b"1", ControlOp.PING, {}).to_frames())[1])
    assert (plain.cluster, plain.args) == ("", {})
    with pytest.raises(ProtocolError, match="cluster"):
        parse_control([b"1", b"ping", pack_map({"cluster": 1})])


def test_a_refusing_disconnect_says_why_and_a_plain_one_says_nothing():
    assert parse_disconnect(split_command(disconnect("another cluster"))[1]) == "another cluster"
    assert parse_disconnect(split_command(disconnect())[1]) == ""
    with pytest.raises(ProtocolError):
        parse_disconnect([pack_map({"refused": 3})])


def test_daemons_are_of_cluster_default_and_serve_names_a_fresh_one_per_run():
    assert Settings().cluster.name == "default"
    assert Settings().gateway.reuse_port is False
    first, second = cluster_name(Settings()), cluster_name(Settings())
    assert first.startswith("serve-") and second.startswith("serve-") and first != second
    named = load_settings(environ={"ZEROSERVE_CLUSTER_NAME": "prod"})
    assert cluster_name(named) == "prod"


def test_the_refusals_remembered_are_bounded(monkeypatch):
    monkeypatch.setattr(admission, "_REMEMBERED", 3)
    gate = ClusterAdmission("a")
    logged = [gate.refuse_worker(bytes([i]), f"w{i}", "b").log for i in range(5)]
    assert logged == [True] * 5
    assert not gate.refuse_worker(b"\x04", "w4", "b").log  # still remembered
    assert gate.refuse_worker(b"\x00", "w0", "b").log      # forgotten: logged again
    assert gate.admits("a") and gate.admits("") and not gate.admits("b")


def test_a_refused_gateway_is_not_alive_and_answers_requests_503_without_sending():
    link = BrokerLink("tcp://127.0.0.1:9", heartbeat_s=60.0, liveness=3, schema_refresh_s=1.0,
                      cluster="b")
    try:
        link.liveness.heard(time.monotonic())
        assert link.alive
        link.refusal = "this broker is of cluster 'a', the call came from cluster 'b'"
        assert not link.alive
        reply = asyncio.run(link.request("svc", "predict", 1.0, b"", []))  # no socket: unsent
        assert reply.status is Status.NO_WORKER and "cluster 'a'" in error_message(reply)
    finally:
        link.context.term()
