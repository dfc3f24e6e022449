"""The REST framings of a stream (gateway/rest_stream.py) and the SDK's reader of the msgpack
one (zeroserve/client/payloads.py StreamFrames): what each chunk, error and end look like."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gateway.errors import RequestFailed
from gateway.rest_stream import Framing, chunk_frame, done_frame, error_frame, framing_of
from zeroserve.client.errors import DeadlineExceeded, ServerError
from zeroserve.client.payloads import StreamFrames
from zeroserve.wire.envelope import Status


@pytest.mark.parametrize(("accept", "framing"), [
    ("", Framing.SSE), ("*/*", Framing.SSE), ("text/event-stream", Framing.SSE),
    ("application/json", Framing.SSE), ("application/x-ndjson", Framing.NDJSON),
    ("application/x-ndjson, text/event-stream", Framing.SSE),
    ("application/vnd.zeroserve.stream+msgpack", Framing.MSGPACK),
    ("application/x-ndjson, application/vnd.zeroserve.stream+msgpack", Framing.MSGPACK),
])
def test_accept_picks_the_framing_sse_by_default(accept: str, framing: Framing) -> None:
    assert framing_of(accept) is framing


def test_sse_events_are_data_lines_then_done_or_error() -> None:
    assert chunk_frame(Framing.SSE, {"i": 1, "text": "a\nb"}) == \
        b'data: {"i":1,"text":"a\\nb"}\n\n'
    assert chunk_frame(Framing.SSE, np.arange(3, dtype=np.int16)) == b"data: [0,1,2]\n\n"
    assert done_frame(Framing.SSE, 3) == b'event: done\ndata: {"chunks": 3}\n\n'
    event, data = error_frame(Framing.SSE, "boom", 500).split(b"\n", 1)
    assert event == b"event: error"
    assert data.startswith(b"data: ") and data.endswith(b"\n\n")
    assert json.loads(data[6:]) == {"error": "boom", "status": 500}


def test_ndjson_is_one_json_object_a_line() -> None:
    lines = [chunk_frame(Framing.NDJSON, "tok"), chunk_frame(Framing.NDJSON, [1.5, 2]),
             error_frame(Framing.NDJSON, "late", 504), done_frame(Framing.NDJSON, 2)]
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    assert [json.loads(line) for line in lines] == [
        {"data": "tok"}, {"data": [1.5, 2]}, {"error": "late", "status": 504},
        {"done": True, "chunks": 2}]


def test_a_chunk_json_cannot_carry_is_a_request_failure() -> None:
    with pytest.raises(RequestFailed) as nan:
        chunk_frame(Framing.SSE, [1.0, float("nan")], "a chunk of s.e")
    assert nan.value.status is Status.BAD_REQUEST and "a chunk of s.e" in str(nan.value)
    with pytest.raises(RequestFailed) as odd:
        chunk_frame(Framing.NDJSON, {"x": {1, 2}}, "a chunk of s.e")
    assert odd.value.status is Status.USER_ERROR and "set" in str(odd.value)


def test_msgpack_frames_keep_dtypes_and_shapes_through_the_sdk_reader() -> None:
    arrays = [np.arange(6, dtype=np.float16).reshape(2, 3), np.array([True, False])]
    stream = b"".join([*(chunk_frame(Framing.MSGPACK, a) for a in arrays),
                       chunk_frame(Framing.MSGPACK, {"nan": float("nan")}),
                       done_frame(Framing.MSGPACK, 3)])
    frames = StreamFrames()
    values = frames.feed(stream)
    assert frames.done and frames.error is None and frames.chunks == 3
    for got, sent in zip(values, arrays):
        assert got.dtype == sent.dtype and got.shape == sent.shape
        np.testing.assert_array_equal(got, sent)
    assert np.isnan(values[2]["nan"])


def test_the_sdk_reader_takes_frames_split_anywhere() -> None:
    stream = b"".join([chunk_frame(Framing.MSGPACK, i) for i in range(5)]
                      + [done_frame(Framing.MSGPACK, 5)])
    frames = StreamFrames()
    values = [v for i in range(len(stream)) for v in frames.feed(stream[i:i + 1])]
    assert values == [0, 1, 2, 3, 4] and frames.done
    assert frames.feed(b"more after the end") == []


def test_the_sdk_reader_hands_out_chunks_before_the_error_that_ended_the_stream() -> None:
    frames = StreamFrames()
    values = frames.feed(chunk_frame(Framing.MSGPACK, "a")
                         + error_frame(Framing.MSGPACK, "idle for 1 s", 504)
                         + chunk_frame(Framing.MSGPACK, "never"))
    assert values == ["a"] and not frames.done
    assert isinstance(frames.error, DeadlineExceeded) and frames.error.from_server
    assert frames.error.message == "idle for 1 s"


def test_a_malformed_frame_is_a_server_error() -> None:
    frames = StreamFrames()
    assert frames.feed(chunk_frame(Framing.MSGPACK, "abc")[:5]) == []  # waits for the rest
    assert frames.error is None and not frames.done
    bogus = StreamFrames()
    bogus.feed(b"\x00\x00\x00\x01\x07")  # a frame that holds a bare integer
    assert isinstance(bogus.error, ServerError)


def test_only_a_client_that_asks_single_answers_is_refused_a_stream() -> None:
    from gateway.rest_stream import asks_single_answer

    assert asks_single_answer("application/json")
    assert asks_single_answer("application/msgpack, application/json;q=0.5")
    for accept in ("", "*/*", "text/event-stream", "application/json, */*;q=0.1",
                   "application/x-ndjson", "application/vnd.zeroserve.stream+msgpack"):
        assert not asks_single_answer(accept), accept
