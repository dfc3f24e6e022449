"""The SDK's own bounds on a gRPC stream (zeroserve.client.grpc_transport._Waits)."""
from __future__ import annotations

from zeroserve.client.grpc_transport import _Waits
from zeroserve.client.operations import GATEWAY_504_GRACE_S


def test_the_first_chunk_waits_the_timeout_and_the_next_the_idle_timeout() -> None:
    waits = _Waits(2.0, 0.5)
    assert waits.next_s() == 2.0 + GATEWAY_504_GRACE_S
    assert "in 2 s (the timeout)" in str(waits.passed())
    waits.chunks = 3
    assert waits.next_s() == 0.5 + GATEWAY_504_GRACE_S
    assert isinstance(waits.passed(), TimeoutError)
    assert "in 0.5 s after chunk 3 (the idle timeout)" in str(waits.passed())


def test_without_an_idle_timeout_the_client_waits_for_the_gateway() -> None:
    waits = _Waits(2.0, None)
    waits.chunks = 1
    assert waits.next_s() is None
