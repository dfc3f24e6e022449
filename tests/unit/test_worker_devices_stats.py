"""The broker's STATS lists each worker with the info of its READY (its devices among them),
for `zeroserve status`, and the status table shows them per worker and per service."""
from __future__ import annotations

from broker.core import BrokerConfig, BrokerCore
from zeroserve.cli.status import devices_of, render, service_rows
from zeroserve.wire.backend import Ready, disconnect
from zeroserve.wire.descriptions import EndpointDescription


def _ready(core: BrokerCore, identity: bytes, service: str, devices: str | None,
           now: float = 0.0) -> None:
    endpoints = {"run": EndpointDescription(service, "run")}
    info = {"pid": 1, "host": "h", "devices": devices}
    core.on_backend([identity, *Ready(identity.decode(), service, endpoints, 2, info)
                     .to_frames()], now)


def test_stats_carry_each_workers_ready_info_and_forget_those_that_left() -> None:
    core = BrokerCore(BrokerConfig(heartbeat_s=1.0, liveness=3), lambda f: None,
                      lambda f: None, now=0.0)
    _ready(core, b"W1", "embed", "0")
    _ready(core, b"W2", "embed", "1")
    _ready(core, b"W3", "rank", "")
    info = {w["worker_id"]: w["info"] for w in core.stats(1.0)["workers"]}
    assert info == {"W1": {"pid": 1, "host": "h", "devices": "0"},
                    "W2": {"pid": 1, "host": "h", "devices": "1"},
                    "W3": {"pid": 1, "host": "h", "devices": ""}}
    _ready(core, b"W1", "embed", "2", now=0.5)  # registered again: its newest READY counts
    core.on_backend([b"W2", *disconnect()], 0.6)  # drained: it leaves
    _ready(core, b"W4", "rank", None, now=0.7)
    info = {w["worker_id"]: w["info"]["devices"] for w in core.stats(1.0)["workers"]}
    assert info == {"W1": "2", "W3": "", "W4": None}
    assert set(core._worker_info) == {b"W1", b"W3", b"W4"}  # nothing kept of W2


def _worker(wid: str, service: str, devices: str | None, draining: bool = False) -> dict:
    return {"worker_id": wid, "service": service, "slots": 2, "in_flight": 1,
            "draining": draining, "last_heartbeat_s": 0.1, "info": {"devices": devices}}


def test_status_shows_devices_per_worker_and_per_service() -> None:
    workers = [_worker("w1", "embed", "0"), _worker("w2", "embed", "1,2", draining=True),
               _worker("w3", "rank", ""), _worker("w4", "tok", None)]
    assert [devices_of(w) for w in workers] == ["0", "1,2", "none", "-"]
    assert devices_of({"worker_id": "old"}) == "-"  # a broker from before info was listed
    assert service_rows(workers) == [["embed", "2 (1 draining)", 4, 2, "0,1,2"],
                                     ["rank", "1", 2, 1, "-"], ["tok", "1", 2, 1, "-"]]
    text = render({"broker_id": "b", "uptime_s": 1.0, "malformed_dropped": 0,
                   "workers": workers, "endpoints": {}})
    services, table = text.split("\n\n")[1:3]
    assert services.splitlines()[0].split() == ["service", "workers", "slots", "in", "flight",
                                                "devices"]
    assert table.splitlines()[2].split()[-1] == "0" and table.splitlines()[4].split()[-1] == \
        "none"
