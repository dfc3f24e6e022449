"""The pure parts of streams: the wire messages, the worker's window, the gateway's
StreamCall (credit once drained, order checked, cancel once)."""
import asyncio

import pytest
import zmq

from worker.streams import StreamWindow
from zeroserve.stream_call import StreamCall
from zeroserve.wire.envelope import Command, ProtocolError, Status, split_command
from zeroserve.wire.frontend import Reply
from zeroserve.wire.stream import (
    Cancel,
    Chunks,
    Credit,
    batch_id_of,
    batch_key,
    frames_size,
    parse_cancel,
    parse_chunks,
    parse_credit,
)


def _rest(frames: list):
    return split_command(frames)


def test_stream_messages_round_trip_on_both_channels():
    message = Chunks(b"rid", 7, [[b"meta", b"body"], [b"m2"]])
    command, rest = _rest(message.to_frames())
    assert command is Command.CHUNK and parse_chunks(rest) == message
    assert [(c.seq, c.frames) for c in message.chunks()] == [(7, [b"meta", b"body"]),
                                                             (8, [b"m2"])]
    command, rest = _rest(Chunks(batch_key(9), 0, [[b"m"]]).to_frames(Command.STREAM_CHUNK))
    assert command is Command.STREAM_CHUNK and batch_id_of(parse_chunks(rest).key) == 9
    command, rest = _rest(Credit(b"rid", 3, 1 << 40).to_frames())
    assert command is Command.CREDIT and parse_credit(rest) == Credit(b"rid", 3, 1 << 40)
    command, rest = _rest(Cancel(b"rid").to_frames())
    assert command is Command.CANCEL and parse_cancel(rest) == Cancel(b"rid")
    command, rest = _rest(Cancel(batch_key(4), b"\0\0\0\0").to_frames(Command.STREAM_CANCEL))
    assert parse_cancel(rest, backend=True) == Cancel(batch_key(4), b"\0\0\0\0")


@pytest.mark.parametrize("rest, parse", [
    ([b"rid", b"\0\0\0\0", b"\0\1"], parse_chunks),                 # no meta
    ([b"rid", b"\0\0", b"\0\1", b"m"], parse_chunks),               # a short number
    ([b"", b"\0\0\0\0", b"\0\1", b"m"], parse_chunks),              # no key
    ([b"rid", b"\0\0\0\0", b"\0\2", b"m"], parse_chunks),          # counts past the end
    ([b"rid", b"\0\0\0\0", b"\0\1", b"m", b"x"], parse_chunks),    # frames left over
    ([b"rid", b"\0\0\0\0", b"\0", b"m"], parse_chunks),             # a short count
    ([b"rid", b"\0" * 5], parse_credit),              # short counts
    ([b"rid"], parse_credit),
    ([b"rid", b"x"], parse_cancel),                   # a frontend cancel has one frame
])
def test_malformed_stream_messages_are_protocol_errors(rest, parse):
    with pytest.raises(ProtocolError):
        parse(rest)


def test_a_backend_key_must_be_a_batch_id():
    with pytest.raises(ProtocolError):
        batch_id_of(b"short")


def test_frames_size_counts_bytes_memoryviews_and_zmq_frames():
    assert frames_size([b"abc", memoryview(b"defg"), zmq.Frame(b"hi")]) == 9


def test_the_window_closes_at_its_chunks_or_bytes_and_credit_reopens_it():
    window = StreamWindow(max_chunks=2, max_bytes=100)
    assert window.open
    window.sent(10)
    window.sent(10)
    assert not window.open  # two chunks in flight
    window.credit(1, 10)
    assert window.open
    window.sent(500)  # one chunk larger than the byte window still went
    assert not window.open
    window.credit(5, 10_000)  # more credit than was sent never goes below zero
    assert (window.chunks, window.nbytes) == (0, 0) and window.open


def _call(sent: list, done: list) -> StreamCall:
    return StreamCall(b"rid", [], sent.append, done.append)


def _run(coro):
    return asyncio.run(coro)


def test_stream_call_credits_once_every_arrived_chunk_was_taken():
    async def scenario():
        sent: list = []
        call = _call(sent, [])
        for seq in range(3):
            call.arrive(Chunks(b"rid", seq, [[b"x" * 10]]))
        for _ in range(2):
            call.took(await call.next(1.0))
        assert sent == []  # a chunk still waits to be taken
        call.took(await call.next(1.0))
        ((command, rest),) = [split_command(f) for f in sent]
        assert command is Command.CREDIT and parse_credit(rest) == Credit(b"rid", 3, 30)
    _run(scenario())


def test_stream_call_ends_with_its_reply_after_the_chunks_and_forgets_itself():
    async def scenario():
        done: list = []
        call = _call([], done)
        call.arrive(Chunks(b"rid", 0, [[b"a"]]))
        call.finish(Reply(b"rid", Status.OK, b""))
        assert done == [call]
        chunk = await call.next(1.0)
        assert (chunk.seq, chunk.frames, chunk.more_queued) == (0, [b"a"], False)
        end = await call.next(1.0)
        assert isinstance(end, Reply) and end.status is Status.OK
    _run(scenario())


def test_a_chunk_out_of_order_ends_the_stream_with_an_error_and_cancels_it():
    async def scenario():
        sent: list = []
        call = _call(sent, [])
        call.arrive(Chunks(b"rid", 0, [[b"a"], [b"b"]]))
        call.arrive(Chunks(b"rid", 3, [[b"d"]]))
        assert [split_command(f)[0] for f in sent] == [Command.CANCEL]
        first = await call.next(1.0)
        assert first.more_queued and (await call.next(1.0)).seq == 1
        end = await call.next(1.0)
        assert end.status is Status.INTERNAL
    _run(scenario())


def test_cancel_is_sent_once_and_never_after_the_end():
    async def scenario():
        sent: list = []
        call = _call(sent, [])
        call.cancel()
        call.cancel()
        assert len(sent) == 1
        ended = _call(sent := [], [])
        ended.finish(Reply(b"rid", Status.OK, b""))
        ended.cancel()
        assert sent == []
    _run(scenario())


def test_next_times_out_when_nothing_comes():
    async def scenario():
        with pytest.raises(TimeoutError):
            await _call([], []).next(0.01)
    _run(scenario())
