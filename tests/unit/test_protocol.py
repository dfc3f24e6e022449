"""The wire protocol: every command round trips, malformed frames are refused with a reason."""
import pytest

from zeroserve.schema import Field
from zeroserve.wire.backend import (
    Batch,
    BatchItem,
    Ready,
    Result,
    ResultItem,
    parse_batch,
    parse_ready,
    parse_result,
)
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import (
    MAX_FRAMES,
    PROTOCOL,
    Command,
    ProtocolError,
    Status,
    pack_map,
    split_command,
)
from zeroserve.wire.frontend import (
    Control,
    ControlOp,
    Reply,
    Request,
    error_message,
    error_reply,
    parse_control,
    parse_reply,
    parse_request,
)


def after_command(frames):
    command, rest = split_command(frames)
    return command, rest


def test_request_round_trips_with_route_fields():
    req = Request(b"id1", "mlp", "predict", 1500, b"meta", [b"t0", b"t1"], 3, b"key")
    command, rest = after_command(req.to_frames())
    assert command is Command.REQUEST
    assert parse_request(rest) == req


def test_reply_round_trips_with_its_status_and_message():
    reply = error_reply(b"id", Status.QUEUE_FULL, "full", retry_after_s=1)
    command, rest = after_command(reply.to_frames())
    parsed = parse_reply(rest)
    assert command is Command.REPLY and parsed.status is Status.QUEUE_FULL
    assert error_message(parsed) == "full"


def test_batch_and_result_round_trip():
    batch = Batch(7, "predict", [BatchItem(b"a", 100, [b"m1"]),
                                   BatchItem(b"b", 5, [b"m2", b"x", b"y"])])
    _, rest = after_command(batch.to_frames())
    assert parse_batch(rest) == batch
    result = Result(7, 0.25, [ResultItem(b"a", Status.OK, [b"o"]),
                                ResultItem(b"b", Status.USER_ERROR, [b"e", b"f"])])
    _, rest = after_command(result.to_frames())
    assert parse_result(rest) == result


def test_the_stages_a_caller_asks_for_travel_with_the_request_batch_result_and_reply():
    req = Request(b"id1", "rank", "score", 100, b"meta", stages=True)
    assert parse_request(after_command(req.to_frames())[1]) == req
    assert not parse_request(after_command(Request(
        b"id1", "rank", "score", 100, b"meta").to_frames())[1]).stages
    batch = Batch(1, "score", [BatchItem(b"a", 10, [b"m"], stages=True),
                               BatchItem(b"b", 10, [b"m"])])
    assert parse_batch(after_command(batch.to_frames())[1]) == batch
    called = [{"service": "tok", "endpoint": "split", "exec_ms": 0.5}]
    result = Result(1, 0.1, [ResultItem(b"a", Status.OK, [b"o"], called),
                             ResultItem(b"b", Status.OK, [b"o"])])
    assert parse_result(after_command(result.to_frames())[1]) == result
    reply = Reply(b"id1", Status.USER_ERROR, b"m", [], [{"service": "rank"}, *called])
    assert parse_reply(after_command(reply.to_frames())[1]) == reply
    assert parse_reply(after_command(Reply(b"i", Status.OK, b"m").to_frames())[1]).stages \
        is None


@pytest.mark.parametrize("stages", [{"a": 1}, [1], [{1: "x"}], [{}] * 65])
def test_stages_that_are_not_a_short_list_of_maps_are_refused(stages):
    status = Status.OK.to_bytes(2, "big") + pack_map(stages)
    with pytest.raises(ProtocolError, match="list of at most 64 maps"):
        parse_reply([b"i", status, b"m"])
    frames = [b"\0" * 8, pack_map({"exec_s": 0.1, "items": [[b"a", 200, 1, stages]]}), b"m"]
    with pytest.raises(ProtocolError, match="list of at most 64 maps"):
        parse_result(frames)


def test_ready_round_trips_and_is_validated():
    ready = Ready("w1", "mlp", {"predict": EndpointDescription(
        "mlp", "predict", (Field("x", "tensor", "float32", (-1, 4)),), batchable=True,
        max_batch_size=8, max_latency_ms=5.0)}, 2, {"pid": 1})
    _, rest = after_command(ready.to_frames())
    assert parse_ready(rest) == ready
    with pytest.raises(ProtocolError, match="slots"):
        parse_ready([pack_map({"worker_id": "w", "service": "s",
                                   "endpoints": {"e": {}}, "slots": 0})])


def test_ready_says_which_batches_its_worker_still_runs():
    ready = Ready("w1", "s", {"e": EndpointDescription("s", "e", ())}, 1,
                  holds=frozenset({7, 2 ** 63}))
    _, rest = after_command(ready.to_frames())
    assert parse_ready(rest).holds == {7, 2 ** 63}
    for holds in ([-1], ["7"], [True], 7, list(range(65537))):
        with pytest.raises(ProtocolError, match="holds"):
            parse_ready([pack_map({"worker_id": "w", "service": "s", "endpoints": {"e": {}},
                                   "slots": 1, "holds": holds})])


def test_control_round_trips():
    ctl = Control(b"c", ControlOp.STATS, {"x": 1})
    _, rest = after_command(ctl.to_frames())
    assert parse_control(rest) == ctl


@pytest.mark.parametrize("frames, reason", [
    ([b"ZS1"], "at least 2"),
    ([b"HTTP", b"\x01"], "unknown protocol"),
    ([b"ZS1", b"\x7f"], "unknown command"),
])
def test_bad_envelope_is_refused(frames, reason):
    with pytest.raises(ProtocolError, match=reason):
        split_command(frames)


@pytest.mark.parametrize("rest, reason", [
    ([b"id", b"svc"], "at least 5"),
    ([b"", b"s", b"e", b"\0" * 9, b"m"], "empty request id"),
    ([b"i", b"\xff", b"e", b"\0" * 9, b"m"], "not UTF-8"),
    ([b"i", b"s", b"e", b"\0\0", b"m"], "route frame"),
])
def test_malformed_request_is_refused(rest, reason):
    with pytest.raises(ProtocolError, match=reason):
        parse_request(rest)


def test_batch_header_counting_more_frames_than_sent_is_refused():
    frames = Batch(1, "e", [BatchItem(b"a", 1, [b"m", b"x"])]).to_frames()
    _, rest = after_command(frames[:-1])
    with pytest.raises(ProtocolError, match="frames"):
        parse_batch(rest)


def test_result_with_unknown_status_is_refused():
    frames = [b"\0" * 8, pack_map({"exec_s": 0.1, "items": [[b"a", 299, 1]]}), b"m"]
    with pytest.raises(ProtocolError, match="status"):
        parse_result(frames)


def test_a_message_with_too_many_frames_is_refused():
    frames = [PROTOCOL, Command.HEARTBEAT.value] + [b""] * MAX_FRAMES
    with pytest.raises(ProtocolError, match="at most"):
        split_command(frames)
