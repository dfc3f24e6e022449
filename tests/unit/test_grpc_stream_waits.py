"""The SDK's own bounds on a gRPC stream (zeroserve.client.grpc_transport._Waits)."""
from __future__ import annotations

from zeroserve.client.grpc_transport import STREAM_GRACE_S, _Waits


def test_the_first_chunk_waits_the_timeout_and_the_next_the_idle_timeout() -> None:
    waits = _Waits(2.0, 0.5)
    assert waits.next_s() == 2.0 + STREAM_GRACE_S
    error = waits.passed()
    assert error.status == 504 and not error.from_server
    assert "in 2 s (the timeout)" in error.message
    waits.chunks = 3
    assert waits.next_s() == 0.5 + STREAM_GRACE_S
    assert "in 0.5 s after chunk 3 (the idle timeout)" in waits.passed().message


def test_without_an_idle_timeout_the_client_waits_for_the_gateway() -> None:
    waits = _Waits(2.0, None)
    waits.chunks = 1
    assert waits.next_s() is None
