"""Triton's statistics extension: what the broker measures (fake clock, no sockets), what the
worker reports of a batch, and how a gateway maps the broker's figures to Triton's answer."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

import zeroserve
from broker.core import BrokerConfig, BrokerCore
from broker.stats import EndpointStats
from gateway.oip_models import ModelRef
from gateway.oip_stats import statistics, statistics_message
from worker.runner import BatchRunner
from zeroserve.service import service_spec
from zeroserve.wire import codec
from zeroserve.wire.backend import (
    Batch,
    BatchItem,
    Ready,
    Result,
    ResultItem,
    parse_batch,
    parse_result,
)
from zeroserve.wire.descriptions import EndpointDescription
from zeroserve.wire.envelope import Command, Status, pack_map, split_command, unpack_map
from zeroserve.wire.frontend import Request

PREDICT = EndpointDescription("svc", "predict")
WALL_AT_START = 1_700_000_000.0


class Broker:
    """A broker core at wall time WALL_AT_START when its clock reads 0."""

    def __init__(self) -> None:
        self.back: list = []
        self.core = BrokerCore(BrokerConfig(), lambda frames: None, self.back.append, now=0.0,
                               wall=WALL_AT_START)
        self.core.on_backend([b"W", *Ready("w", "svc", {"predict": PREDICT}, 1).to_frames()],
                             0.0)
        self.ids = 0

    def call(self, arrive: float, dispatched_by: float, answer: float, status: Status,
             times: tuple[float, float, float], rows: int = 1) -> None:
        """One request arriving at ``arrive``, answered at ``answer`` with ``status``."""
        self.ids += 1
        self.back.clear()
        rid = self.ids.to_bytes(8, "big")
        self.core.on_frontend([b"G", *Request(rid, "svc", "predict", 10_000, b"m", [], rows,
                                              b"").to_frames()], arrive)
        self.core.on_tick(dispatched_by)
        (batch,) = [parse_batch(split_command(f[1:])[1]) for f in self.back
                    if split_command(f[1:])[0] is Command.BATCH]
        result = Result(batch.batch_id, sum(times), [
            ResultItem(it.request_id, status, [b"out"]) for it in batch.items], *times)
        self.core.on_backend([b"W", *result.to_frames()], answer)

    def figures(self) -> dict:
        """The stats control answer as a gateway reads it (through msgpack)."""
        return unpack_map(pack_map(self.core.stats(10.0)), "stats")


def test_the_broker_counts_ok_and_failed_requests_with_their_times() -> None:
    broker = Broker()
    broker.call(1.0, 1.0, 1.5, Status.OK, (0.001, 0.2, 0.003))
    broker.call(2.0, 2.0, 2.25, Status.OK, (0.002, 0.1, 0.001))
    broker.call(3.0, 3.0, 3.5, Status.USER_ERROR, (0.0, 0.4, 0.0))
    inference = broker.figures()["endpoints"]["svc.predict"]["inference"]
    assert (inference["rows"], inference["executions"]) == (2, 2)
    assert inference["success"] == [2, pytest.approx(0.75)]
    assert inference["fail"] == [1, pytest.approx(0.5)]
    assert inference["queue"] == [2, 0.0]
    assert inference["compute"] == [[2, pytest.approx(0.003)], [2, pytest.approx(0.3)],
                                    [2, pytest.approx(0.004)]]
    assert inference["by_size"] == {1: [[2, pytest.approx(0.003)], [2, pytest.approx(0.3)],
                                        [2, pytest.approx(0.004)]]}
    assert inference["last_wall_s"] == pytest.approx(WALL_AT_START + 2.25)


def test_a_request_expired_in_its_queue_is_a_failure_for_its_whole_wait() -> None:
    stats = EndpointStats()
    stats.record_status(Status.DEADLINE_EXCEEDED, 0.25)
    stats.record_status(Status.OK, 0.5)
    summary = stats.summary(100.0)["inference"]
    assert (summary["fail"], summary["success"]) == ([1, 0.25], [1, 0.5])
    assert summary["last_wall_s"] == 0.0 and summary["rows"] == 0  # no OK execution yet


def test_rows_of_a_batch_count_as_inferences_and_the_batch_once_per_size() -> None:
    stats = EndpointStats().inference
    for rows, wait in ((3, 0.01), (5, 0.02)):
        stats.record_ok(rows, wait, (0.001, 0.01, 0.002))
    stats.record_execution(8, (0.001, 0.01, 0.002), now=4.0)
    stats.record_ok(2, 0.0, (0.001, 0.004, 0.001))
    stats.record_execution(2, (0.001, 0.004, 0.001), now=5.0)
    summary = stats.summary(10.0)
    assert (summary["rows"], summary["executions"], summary["last_wall_s"]) == (10, 2, 15.0)
    assert summary["queue"] == [3, pytest.approx(0.03)]
    assert summary["compute"][1] == [3, pytest.approx(0.024)]  # each request: its batch's
    assert sorted(summary["by_size"]) == [2, 8]
    assert summary["by_size"][8][1] == [1, 0.01]


def test_the_gateway_maps_the_figures_to_tritons_answer_in_ns() -> None:
    broker = Broker()
    broker.call(1.0, 1.0, 1.5, Status.OK, (0.001, 0.2, 0.003))
    refs = [ModelRef("svc", "svc", "predict"), ModelRef("svc.predict", "svc", "predict"),
            ModelRef("other", "other", "run")]
    doc = statistics(refs, broker.figures())
    first, alias, unknown = doc["model_stats"]
    assert first == {
        "name": "svc", "version": "1",
        "last_inference": int((WALL_AT_START + 1.5) * 1000),
        "inference_count": 1, "execution_count": 1,
        "inference_stats": {
            "success": {"count": 1, "ns": 500_000_000}, "fail": {"count": 0, "ns": 0},
            "queue": {"count": 1, "ns": 0},
            "compute_input": {"count": 1, "ns": 1_000_000},
            "compute_infer": {"count": 1, "ns": 200_000_000},
            "compute_output": {"count": 1, "ns": 3_000_000},
            "cache_hit": {"count": 0, "ns": 0}, "cache_miss": {"count": 0, "ns": 0}},
        "batch_stats": [{"batch_size": 1, "compute_input": {"count": 1, "ns": 1_000_000},
                         "compute_infer": {"count": 1, "ns": 200_000_000},
                         "compute_output": {"count": 1, "ns": 3_000_000}}]}
    assert {**alias, "name": "svc"} == first
    assert unknown["inference_count"] == 0 and unknown["batch_stats"] == []
    assert unknown["inference_stats"]["success"] == {"count": 0, "ns": 0}


def test_the_grpc_message_carries_the_same_figures() -> None:
    broker = Broker()
    broker.call(1.0, 1.0, 1.5, Status.OK, (0.001, 0.2, 0.003))
    doc = statistics([ModelRef("svc", "svc", "predict")], broker.figures())
    (message,) = statistics_message(doc).model_stats
    entry = doc["model_stats"][0]
    assert (message.name, message.version, message.last_inference, message.inference_count,
            message.execution_count) == (entry["name"], "1", entry["last_inference"], 1, 1)
    assert message.inference_stats.compute_infer.ns == 200_000_000
    assert message.inference_stats.success.count == 1
    assert [(b.batch_size, b.compute_output.ns) for b in message.batch_stats] == [(1, 3_000_000)]


def test_result_timings_are_optional_header_keys() -> None:
    frames = Result(7, 0.5, [ResultItem(b"a", Status.OK, [b"o"])], 0.1, 0.3, 0.1).to_frames()
    assert parse_result(frames[2:]).infer_s == 0.3
    old = [*frames[:3], pack_map({"exec_s": 0.5, "items": [[b"a", 200, 1]]}), *frames[4:]]
    parsed = parse_result(old[2:])
    assert (parsed.input_s, parsed.infer_s, parsed.output_s) == (0.0, 0.0, 0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_worker_reports_decode_function_and_encode_time_apart() -> None:
    clock = Clock()

    @zeroserve.service(name="timed")
    class Timed:
        @zeroserve.api(batchable=True)
        def run(self, x: np.ndarray) -> np.ndarray:
            clock.now += 0.25
            return x

    async def threads(fn):
        return fn()

    runner = BatchRunner(service_spec(Timed), Timed(), threads, clock)
    meta, body = codec.encode({"x": np.zeros((2, 3))})
    batch = Batch(1, "run", [BatchItem(b"a", 1000, [meta, *body]),
                             BatchItem(b"b", 1000, [meta, *body])])
    result = asyncio.run(runner.run(batch))
    assert [it.status for it in result.items] == [Status.OK, Status.OK]
    assert (result.input_s, result.infer_s, result.output_s) == (0.0, 0.25, 0.0)
    assert result.exec_s == 0.25
