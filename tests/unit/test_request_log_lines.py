"""The request log's lines: fields, ids taken from headers, and sampling."""
from __future__ import annotations

import json

from gateway.request_log import (
    RequestLog,
    RequestRecord,
    open_request_log,
    request_id_of,
    trace_id_of,
    utc_time,
)
from zeroserve.config import GatewaySettings


def test_time_is_utc_iso_with_milliseconds() -> None:
    assert utc_time(0.0) == "1970-01-01T00:00:00.000Z"
    assert utc_time(1767225600.25) == "2026-01-01T00:00:00.250Z"


def test_a_sane_request_id_is_kept_and_anything_else_replaced() -> None:
    assert request_id_of("req-42.a:b_c") == "req-42.a:b_c"
    for bad in (None, "", "x" * 129, "has space", 'quote"', "line\nbreak"):
        made = request_id_of(bad)
        assert made != bad and len(made) == 16


def test_the_trace_id_comes_from_a_valid_traceparent_only() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_of(f"00-{trace}-00f067aa0ba902b7-01") == trace
    assert trace_id_of(f"00-{trace.upper()}-00f067aa0ba902b7-01") == trace
    assert trace_id_of(None) is None
    assert trace_id_of("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert trace_id_of(f"00-{trace}-short-01") is None


def test_a_record_is_one_json_line() -> None:
    record = RequestRecord("2026-01-01T00:00:00.000Z", "r1", None, "rest", "POST",
                           "/mlp/predict", "mlp", "predict", 200, 1.5, 10, 20, "team")
    line = record.to_line()
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-01-01T00:00:00.000Z", "request_id": "r1", "trace_id": None,
        "route": "rest", "method": "POST", "path": "/mlp/predict", "service": "mlp",
        "endpoint": "predict", "status": 200, "duration_ms": 1.5, "bytes_in": 10,
        "bytes_out": 20, "key": "team"}


def test_sampling_logs_the_drawn_share() -> None:
    draws = iter([0.05, 0.5, 0.09, 0.99, 0.1])
    log = RequestLog(lambda line: None, sample=0.1, draw=lambda: next(draws))
    assert [log.sampled() for _ in range(5)] == [True, False, True, False, False]
    assert RequestLog(lambda line: None, sample=1.0, draw=lambda: 1 / 0).sampled()
    assert not RequestLog(lambda line: None, sample=0.0, draw=lambda: 0.0).sampled()


def test_the_log_is_off_by_default_and_a_bad_sample_is_refused(tmp_path) -> None:
    assert open_request_log(GatewaySettings()) is None
    path = tmp_path / "requests.log"
    try:
        open_request_log(GatewaySettings(request_log_path=str(path), request_log_sample=2.0))
    except ValueError as exc:
        assert "request_log_sample" in str(exc)
    else:
        raise AssertionError("a sample of 2 was taken")
