"""Streaming endpoints through the Open Inference Protocol: Triton's decoupled responses on
gRPC ``ModelStreamInfer`` with the real tritonclient (``start_stream`` /
``async_stream_infer``, and ``tritonclient.grpc.aio``), and Triton's generate extension over
HTTP (``generate``, ``generate_stream``)."""
from __future__ import annotations

import asyncio
import http.client
import json
import queue
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from cluster import ROOT, Cluster
from tritonclient.utils import InferenceServerException

from zeroserve.grpc_gen import grpc_service_pb2 as pb

pytestmark = pytest.mark.integration

FINAL = "triton_final_response"


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(tmp_path_factory.mktemp("oip-stream"))
    try:
        cluster.broker()
        cluster.gateway()
        cluster.test_worker("Streamer")
        cluster.worker(f"{ROOT / 'tests' / 'openai_services.py'}:Parrot")
        cluster.wait_ready(2)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def client(streams: Cluster):
    with triton.InferenceServerClient(f"127.0.0.1:{streams.grpc_port}") as c:
        yield c


def _int(name: str, value: int) -> triton.InferInput:
    tensor = triton.InferInput(name, [1], "INT64")
    tensor.set_data_from_numpy(np.array([value], np.int64))
    return tensor


def _text(name: str, value: str) -> triton.InferInput:
    tensor = triton.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value.encode()], dtype=object))
    return tensor


def _final(result: triton.InferResult) -> bool:
    return result.get_response().parameters[FINAL].bool_param


class Collector:
    """A stream's callback: every (result, error) in arrival order."""

    def __init__(self) -> None:
        self.answers: queue.Queue = queue.Queue()

    def __call__(self, result: triton.InferResult | None, error: Exception | None) -> None:
        self.answers.put((result, error))

    def take(self, count: int) -> list[tuple[triton.InferResult | None, Exception | None]]:
        return [self.answers.get(timeout=20) for _ in range(count)]


def test_a_streaming_endpoint_is_a_decoupled_model(client: triton.InferenceServerClient
                                                   ) -> None:
    config = client.get_model_config("streamer.count", as_json=True)["config"]
    assert config["model_transaction_policy"] == {"decoupled": True}
    assert "model_transaction_policy" not in client.get_model_config(
        "streamer.ping", as_json=True)["config"]
    meta = client.get_model_metadata("streamer.count", as_json=True)
    assert [o["name"] for o in meta["outputs"]] == ["output"]


def test_each_chunk_is_one_response_and_an_empty_final_one_when_asked(
        client: triton.InferenceServerClient) -> None:
    answers = Collector()
    client.start_stream(callback=answers)
    try:
        client.async_stream_infer("streamer.count", [_int("n", 3)], request_id="r1",
                                  enable_empty_final_response=True)
        got = answers.take(4)
    finally:
        client.stop_stream()
    assert all(error is None for _, error in got)
    results = [r for r, _ in got if r is not None]
    assert [r.get_response().id for r in results] == ["r1"] * 4
    assert [r.as_numpy("output").tolist() for r in results[:3]] == [[0], [1], [2]]
    assert [_final(r) for r in results] == [False, False, False, True]
    assert len(results[3].get_response().outputs) == 0  # the empty final response


def test_without_an_empty_final_response_each_chunk_comes_and_no_more(
        client: triton.InferenceServerClient) -> None:
    answers = Collector()
    client.start_stream(callback=answers)
    try:
        client.async_stream_infer("streamer.count", [_int("n", 3)], request_id="plain")
        got = answers.take(3)
        client.async_stream_infer("parrot.plain", [_text("text", "pong")], request_id="after")
        after, error = answers.take(1)[0]
    finally:
        client.stop_stream()
    results = [r for r, _ in got]
    assert [r.as_numpy("output").tolist() for r in results] == [[0], [1], [2]]
    assert [_final(r) for r in results[:2]] == [False, False]  # more were to come
    assert error is None and after.get_response().id == "after" and _final(after)
    assert after.as_numpy("output").tolist() == [b"pong"]


def test_requests_on_one_stream_run_at_once(client: triton.InferenceServerClient,
                                            tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    answers = Collector()
    client.start_stream(callback=answers)
    try:
        client.async_stream_infer("streamer.first_then_wait", [_text("gate", str(gate))],
                                  request_id="slow")
        first = answers.take(1)[0][0]
        assert first.get_response().id == "slow"
        assert first.as_numpy("output").tolist() == [b"first"]
        # the slow request is blocked before its second chunk: another one is answered
        client.async_stream_infer("streamer.acount", [_int("n", 2)], request_id="fast")
        fast = answers.take(2)
        assert [r.get_response().id for r, _ in fast] == ["fast", "fast"]
        assert [r.as_numpy("text").tolist() for r, _ in fast] == [[b"token0"], [b"token1"]]
        gate.touch()
        second = answers.take(1)[0][0]
        assert second.as_numpy("output").tolist() == [b"second"]
    finally:
        client.stop_stream()


def test_an_error_mid_stream_is_that_requests_error_and_the_stream_goes_on(
        client: triton.InferenceServerClient) -> None:
    answers = Collector()
    client.start_stream(callback=answers)
    try:
        client.async_stream_infer("streamer.fails_after", [_int("n", 2)], request_id="f")
        got = answers.take(3)
        client.async_stream_infer("streamer.fails_first", [_text("why", "bad start")],
                                  request_id="g")
        client.async_stream_infer("streamer.count", [_int("n", 1)], request_id="h",
                                  enable_empty_final_response=True)
        later = answers.take(3)
    finally:
        client.stop_stream()
    assert [r.as_numpy("output").tolist() for r, _ in got[:2]] == [[0], [1]]
    assert got[2][1] is not None and "failed after 2 chunks" in str(got[2][1])
    errors = [str(e) for _, e in later if e is not None]
    assert len(errors) == 1 and "bad start" in errors[0]
    assert [r.get_response().id for r, e in later if e is None] == ["h", "h"]


def test_a_bad_request_is_answered_in_the_stream(client: triton.InferenceServerClient) -> None:
    answers = Collector()
    client.start_stream(callback=answers)
    try:
        client.async_stream_infer("streamer.count", [_int("nope", 1)], request_id="bad")
        client.async_stream_infer("missing", [_int("n", 1)], request_id="none")
        got = answers.take(2)
    finally:
        client.stop_stream()
    messages = [str(e) for _, e in got]
    assert len([m for m in messages if "no input 'nope'" in m]) == 1
    assert len([m for m in messages if "unknown model" in m and "'missing'" in m]) == 1


def test_a_message_that_does_not_parse_is_answered_and_the_stream_goes_on(
        streams: Cluster) -> None:
    request = pb.ModelInferRequest(model_name="parrot.plain", id="ok")
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\x02\x00\x00\x00hi")
    good = request.SerializeToString()
    with grpc.insecure_channel(f"127.0.0.1:{streams.grpc_port}") as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        answers = [pb.ModelStreamInferResponse.FromString(a)
                   for a in stream(iter([good, b"\xff\xff", good]), timeout=10)]
    errors = [a.error_message for a in answers if a.error_message]
    assert len(errors) == 1 and "is not a valid inference.ModelInferRequest" in errors[0]
    assert [a.infer_response.id for a in answers if not a.error_message] == ["ok", "ok"]


def test_the_aio_client_streams_unchanged(streams: Cluster) -> None:
    """tritonclient.grpc.aio cannot ask for an empty final response: its stream ends when the
    requests it sent are answered."""
    async def run() -> list[tuple[str, list, bool]]:
        async with triton_aio.InferenceServerClient(f"127.0.0.1:{streams.grpc_port}") as c:
            async def requests():
                yield {"model_name": "streamer.count", "inputs": [_int("n", 3)],
                       "request_id": "aio"}
            got = []
            async for result, error in c.stream_infer(requests()):
                assert error is None
                got.append((result.get_response().id, result.as_numpy("output").tolist(),
                            _final(result)))
            return got
    got = asyncio.run(run())
    assert [(request_id, output) for request_id, output, _ in got] == [
        ("aio", [0]), ("aio", [1]), ("aio", [2])]
    assert [final for _, _, final in got[:2]] == [False, False]


def _post(cluster: Cluster, path: str, body: dict) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=20)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    return conn.getresponse()


def _events(body: bytes) -> list[dict]:
    events = (event.strip() for event in body.split(b"\n\n"))
    return [json.loads(event[6:]) for event in events if event.startswith(b"data: ")]


def test_generate_answers_one_response_and_joins_text(streams: Cluster) -> None:
    status, doc, _ = streams.post("/v2/models/parrot.complete/generate",
                                  {"prompt": "one two three", "parameters": {"max_tokens": 2}})
    assert status == 200
    assert doc == {"model_name": "parrot.complete", "model_version": "1",
                   "output": "one two "}
    assert streams.post("/v2/models/streamer.ping/versions/1/generate", {})[1]["output"] == \
        "pong"
    status, doc, _ = streams.post("/v2/models/streamer.count/generate", {"n": 1})
    assert (status, doc["output"]) == (200, 0)
    status, doc, _ = streams.post("/v2/models/streamer.count/generate", {"n": 3})
    assert status == 400 and "exactly 1 response" in doc["error"]


def test_generate_stream_sends_each_chunk_as_an_event(streams: Cluster, tmp_path: Path) -> None:
    answer = _post(streams, "/v2/models/streamer.acount/generate_stream", {"n": 3})
    assert answer.status == 200
    assert answer.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    assert _events(answer.read()) == [
        {"model_name": "streamer.acount", "model_version": "1", "i": i, "text": f"token{i}"}
        for i in range(3)]
    gate = tmp_path / "gate"
    answer = _post(streams, "/v2/models/streamer.first_then_wait/generate_stream",
                   {"gate": str(gate)})
    first = answer.readline()  # the first event arrives while the generator waits
    assert json.loads(first[6:])["output"] == "first"
    gate.touch()
    assert _events(answer.read())[0]["output"] == "second"


def test_generate_stream_errors(streams: Cluster) -> None:
    answer = _post(streams, "/v2/models/streamer.fails_after/generate_stream", {"n": 2})
    events = _events(answer.read())
    assert answer.status == 200 and [e.get("output") for e in events[:2]] == [0, 1]
    assert "failed after 2 chunks" in events[2]["error"]
    answer = _post(streams, "/v2/models/streamer.fails_first/generate_stream", {})
    assert answer.status == 500 and "bad start" in json.loads(answer.read())["error"]
    answer = _post(streams, "/v2/models/streamer.count/generate_stream", {"n": "three"})
    assert answer.status == 400 and "n" in json.loads(answer.read())["error"]
    answer = _post(streams, "/v2/models/nope/generate_stream", {})
    assert answer.status == 404


def test_a_client_that_leaves_generate_stream_closes_the_generator(streams: Cluster,
                                                                    tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    answer = _post(streams, "/v2/models/streamer.acount/generate_stream",
                   {"n": 1000, "delay_s": 0.05, "marker": str(marker)})
    assert json.loads(answer.readline()[6:])["i"] == 0
    answer.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 5
    while "closed" not in (marker.read_text() if marker.exists() else ""):
        assert time.monotonic() < deadline, "the generator was not closed"
        time.sleep(0.02)
    assert marker.read_text().split() == ["started", "closed"]


def test_infer_refuses_a_decoupled_model_as_triton_does(
        streams: Cluster, client: triton.InferenceServerClient) -> None:
    status, doc, _ = streams.post("/v2/models/streamer.count/infer", {"inputs": [
        {"name": "n", "datatype": "INT64", "shape": [1], "data": [3]}]})
    assert status == 400 and "decoupled" in doc["error"]
    with pytest.raises(InferenceServerException, match="decoupled"):
        client.infer("streamer.count", [_int("n", 3)])
