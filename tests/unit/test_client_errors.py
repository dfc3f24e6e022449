"""The SDK's errors say who made them: a gateway's error answer, or the client when no answer
came (its own timeout, no gateway reachable)."""
from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

import zeroserve
from zeroserve.client import operations as ops
from zeroserve.client import payloads
from zeroserve.client.errors import from_grpc
from zeroserve.client.job_operations import get_job
from zeroserve.client.transport import Operation


class ScriptedTransport:
    """Raises the errors of ``script`` in turn, then answers "ok"; records the time left.
    Lists endpoint s.e with ``retry_on_worker_loss=resend`` (not counted as a call)."""

    def __init__(self, *script: BaseException, resend: bool = False) -> None:
        self.script = list(script)
        self.calls: list[float] = []
        self.listing = {"s": {"workers": 1, "endpoints": {"e": {"retry_on_worker_loss": resend}}}}

    def send(self, operation: Operation, timeout_s: float) -> Any:
        if isinstance(operation, ops.Services):
            return self.listing
        self.calls.append(timeout_s)
        if self.script:
            raise self.script.pop(0)
        return "ok"

    def close(self) -> None:
        pass


def _client(transport: ScriptedTransport, timeout: float = 5.0,
            overshoot_s: float = 0.0) -> zeroserve.Client:
    """A client on a fake clock; each sleep lasts ``overshoot_s`` longer than asked."""
    now = [0.0]
    return zeroserve.Client("http://unused:1", timeout=timeout, transport=transport,
                            clock=lambda: now[0],
                            sleep=lambda s: now.__setitem__(0, now[0] + s + overshoot_s))


def test_the_clients_own_timeout_is_a_deadline_exceeded_not_from_the_server() -> None:
    transport = ScriptedTransport(TimeoutError("timed out"))
    with pytest.raises(zeroserve.DeadlineExceeded) as info:
        _client(transport, timeout=2.0).call("s", "e")
    assert info.value.status == 504 and not info.value.from_server
    assert "no answer came from the server" in info.value.message
    assert "deadline 2.0 s" in info.value.message
    assert len(transport.calls) == 1  # not retried: the call may be running


def test_a_504_the_gateway_sent_is_from_the_server_with_its_message() -> None:
    error = payloads.http_error(504, b'{"error": "deadline exceeded after 8000 ms in the queue"}')
    transport = ScriptedTransport(error)
    with pytest.raises(zeroserve.DeadlineExceeded) as info:
        _client(transport).call("s", "e")
    assert info.value.from_server
    assert info.value.message == "deadline exceeded after 8000 ms in the queue"


@pytest.mark.parametrize("status", [400, 404, 500, 503, 504])
def test_every_http_error_answer_is_from_the_server(status: int) -> None:
    assert payloads.http_error(status, b'{"error": "x"}').from_server


def test_no_gateway_reachable_until_the_deadline_is_not_from_the_server() -> None:
    refused = zeroserve.Unreachable(503, "no gateway answered at http://unused:1")
    transport = ScriptedTransport(*[refused] * 1000)
    with pytest.raises(zeroserve.Unreachable) as info:
        _client(transport, timeout=1.0).call("s", "e")
    assert not info.value.from_server and len(transport.calls) > 3


def test_refused_then_answered_within_the_deadline_succeeds() -> None:
    refused = zeroserve.Unreachable(503, "connection refused")
    assert _client(ScriptedTransport(refused, refused)).call("s", "e") == "ok"


@pytest.mark.parametrize("last", [zeroserve.Overloaded(503, "queue full"),
                                  zeroserve.Unreachable(503, "connection refused")])
def test_a_deadline_passed_while_retrying_keeps_the_last_tries_origin(
        last: zeroserve.Overloaded) -> None:
    client = _client(ScriptedTransport(last), timeout=1.0, overshoot_s=5.0)
    with pytest.raises(zeroserve.DeadlineExceeded) as info:
        client.call("s", "e")
    assert info.value.from_server is last.from_server
    assert "while retrying" in info.value.message and last.message in info.value.message


def test_grpcs_own_deadline_is_not_from_the_server_a_gateways_is() -> None:
    local = from_grpc(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    sent = from_grpc(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded after 10 ms "
                                                        "waiting in the queue")
    assert isinstance(local, zeroserve.DeadlineExceeded) and not local.from_server
    assert isinstance(sent, zeroserve.DeadlineExceeded) and sent.from_server
    assert not from_grpc(grpc.StatusCode.UNAVAILABLE, "failed to connect").from_server
    assert from_grpc(grpc.StatusCode.UNAVAILABLE, "no worker serves 'x'").from_server


def test_the_async_clients_own_timeout_is_not_from_the_server() -> None:
    class Silent:
        async def send(self, operation: Operation, timeout_s: float) -> Any:
            await asyncio.wait_for(asyncio.sleep(1.0), 0.01)  # as the HTTP pool times out

        async def close(self) -> None:
            pass

    async def main() -> zeroserve.DeadlineExceeded:
        client = zeroserve.AsyncClient("http://unused:1", timeout=1.0, transport=Silent())
        with pytest.raises(zeroserve.DeadlineExceeded) as info:
            await client.call("s", "e")
        return info.value

    error = asyncio.run(main())
    assert not error.from_server and "no answer came from the server" in error.message


class SilentTransport:
    """A transport whose every call times out; records the HTTP paths of its calls."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def send(self, operation: Operation, timeout_s: float) -> Any:
        self.paths.append(operation.http(timeout_s).path)
        raise TimeoutError("timed out")

    def close(self) -> None:
        pass


def test_a_job_call_with_no_answer_is_the_clients_deadline_exceeded() -> None:
    transport = SilentTransport()
    client = zeroserve.Client("http://unused:1", timeout=3.0, transport=transport)
    with pytest.raises(zeroserve.DeadlineExceeded) as info:
        client.submit("s", "t")
    assert not info.value.from_server and "deadline 3.0 s" in info.value.message
    assert transport.paths == ["/v1/jobs"]  # not sent again: the job may have been stored
    assert get_job("a/b?c").http(3.0).path == "/v1/jobs/a%2Fb%3Fc"  # the id is one segment


def test_a_503_answers_retry_after_is_read_into_the_overload() -> None:
    error = payloads.http_error(503, b'{"error": "queue full"}', "2")
    assert isinstance(error, zeroserve.Overloaded) and error.retry_after_s == 2.0
    assert payloads.http_error(503, b"{}", "Wed, 21 Oct 2015 07:28:00 GMT").retry_after_s is None


def test_a_grpc_connection_that_broke_mid_call_is_interrupted_not_retried() -> None:
    broken = from_grpc(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    assert isinstance(broken, zeroserve.CallInterrupted) and not broken.from_server
    transport = ScriptedTransport(broken)
    with pytest.raises(zeroserve.CallInterrupted, match="may or may not have run"):
        _client(transport).call("s", "e")
    assert len(transport.calls) == 1


def test_an_interrupted_call_is_sent_again_when_its_endpoint_allows_running_twice() -> None:
    broken = from_grpc(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    transport = ScriptedTransport(broken, broken, resend=True)
    assert _client(transport).call("s", "e") == "ok"
    assert len(transport.calls) == 3
