"""Which bound endpoints other hosts can reach: the broker warns when CURVE is off on them."""
import pytest

from zeroserve.curve import reachable_from_other_hosts


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:5555", "tcp://127.3.2.1:1",
                                      "tcp://localhost:5555", "tcp://[::1]:5555",
                                      "ipc:///tmp/zs.sock", "inproc://broker"])
def test_loopback_and_local_transports_are_not_reachable(endpoint):
    assert not reachable_from_other_hosts(endpoint)


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5555", "tcp://10.1.2.3:5556",
                                      "tcp://[::]:5555", "tcp://broker.internal:5555"])
def test_other_tcp_addresses_are_reachable(endpoint):
    assert reachable_from_other_hosts(endpoint)
