"""The trace context's pure helpers (zeroserve.tracing): W3C traceparent, the meta map's first
entries, the settings; and that the daemons import without OpenTelemetry while tracing is off."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zeroserve.config import TracingSettings
from zeroserve.tracing import (
    INSTALL_HINT,
    TRACEPARENT_KEY,
    TRACESTATE_KEY,
    TraceParent,
    TracingError,
    carried_traceparent,
    format_traceparent,
    parse_traceparent,
    service_name,
    start_tracing,
    take_carried,
    traces_url,
    with_trace,
)
from zeroserve.wire import codec

ROOT = Path(__file__).resolve().parents[2]
HEADER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_traceparent_is_parsed_and_formatted_back() -> None:
    parsed = parse_traceparent(HEADER)
    assert parsed == TraceParent(0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, 1)
    assert parsed.sampled
    assert format_traceparent(parsed) == HEADER
    assert not TraceParent(1, 2, 0).sampled
    assert format_traceparent(TraceParent(1, 2, 0)) == f"00-{1:032x}-{2:016x}-00"


@pytest.mark.parametrize("value", [
    None, "", "garbage", HEADER[:-1], HEADER + "0", HEADER.replace("-", "_"),
    "ff" + HEADER[2:],                                        # version ff is invalid
    "00-" + "0" * 32 + HEADER[35:],                           # all-zero trace id
    HEADER[:36] + "0" * 16 + "-01",                           # all-zero span id
    HEADER + "-extra",                                        # version 00 has four fields
    "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",  # not hex
])
def test_an_invalid_traceparent_is_none(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_a_later_version_may_carry_more_fields() -> None:
    parsed = parse_traceparent("01" + HEADER[2:] + "-more")
    assert parsed is not None and parsed.span_id == 0x00f067aa0ba902b7


@pytest.mark.parametrize("entries", [0, 1, 14, 15, 16, 300, 65535])
def test_the_trace_context_becomes_the_first_entries_of_any_map(entries: int) -> None:
    inputs = {f"in{i}": i for i in range(entries)}
    meta, _ = codec.encode(inputs)
    traced = with_trace(meta, HEADER, "k=v")
    decoded = codec.decode(traced)
    assert list(decoded)[:2] == [TRACEPARENT_KEY, TRACESTATE_KEY]
    assert take_carried(decoded) == (HEADER, "k=v")
    assert decoded == inputs
    assert carried_traceparent(traced) == HEADER


def test_an_empty_tracestate_adds_one_entry_only() -> None:
    decoded = codec.decode(with_trace(codec.encode({"x": 1})[0], HEADER))
    assert decoded == {TRACEPARENT_KEY: HEADER, "x": 1}
    assert take_carried(decoded) == (HEADER, "") and decoded == {"x": 1}


def test_arrays_inline_and_in_frames_survive_the_trace_context() -> None:
    small, large = np.arange(4, dtype=np.float32), np.ones((64, 64), np.float32)
    meta, frames = codec.encode({"small": small, "large": large})
    traced = with_trace(meta, HEADER)
    assert carried_traceparent(traced) == HEADER
    decoded = codec.decode(traced, frames)
    take_carried(decoded)
    np.testing.assert_array_equal(decoded["small"], small)
    np.testing.assert_array_equal(decoded["large"], large)


def test_a_meta_that_is_not_a_map_is_left_as_it_is() -> None:
    for value in ([1, 2], "text", 3, None):
        meta, _ = codec.encode(value)
        assert with_trace(meta, HEADER) == meta
    assert with_trace(b"", HEADER) == b""


@pytest.mark.parametrize("meta", [
    b"", b"\x80", b"\x81\xa1x\x01", b"\xde", b"\xff\xff", b"\x91\x01",
    msgpack.packb({"x": 1, TRACEPARENT_KEY: HEADER}),  # not the first entry: not ours
    msgpack.packb({TRACEPARENT_KEY: 7}),
])
def test_a_meta_without_a_leading_traceparent_carries_none(meta: bytes) -> None:
    assert carried_traceparent(meta) is None


def test_the_broker_reads_only_the_first_bytes_of_a_large_meta() -> None:
    meta = with_trace(msgpack.packb({"blob": b"x" * 10_000_000}), HEADER)
    assert carried_traceparent(memoryview(meta)) == HEADER


@given(st.binary(max_size=200))
def test_carried_traceparent_never_raises(data: bytes) -> None:
    result = carried_traceparent(data)
    assert result is None or isinstance(result, str)


def test_inputs_without_a_trace_context_are_untouched() -> None:
    inputs = {"x": 1}
    assert take_carried(inputs) is None and inputs == {"x": 1}
    odd = {TRACEPARENT_KEY: 5, TRACESTATE_KEY: "s", "x": 1}
    assert take_carried(odd) is None and odd == {"x": 1}  # taken out all the same


def test_the_traces_url_gets_the_standard_path_only_without_one() -> None:
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert traces_url("https://c/otlp/v1/traces") == "https://c/otlp/v1/traces"


def test_each_daemon_kind_has_its_service_name_unless_one_is_set() -> None:
    assert service_name(TracingSettings(), "broker") == "zeroserve-broker"
    assert service_name(TracingSettings(service_name="edge"), "gateway") == "edge"


def test_tracing_is_off_without_an_endpoint_and_a_bad_ratio_is_refused() -> None:
    assert start_tracing(TracingSettings(), "worker") is None
    with pytest.raises(TracingError, match="sample_ratio"):
        start_tracing(TracingSettings(otlp_endpoint="http://c:4318", sample_ratio=1.5), "broker")


_WITHOUT_OTEL = """
import sys

class NoOpenTelemetry:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"No module named {name!r} (hidden by the test)")

sys.meta_path.insert(0, NoOpenTelemetry())
import broker.daemon, gateway.daemon, worker.daemon, zeroserve.cli.main
from zeroserve.config import TracingSettings
from zeroserve.tracing import TracingError, start_tracing
assert start_tracing(TracingSettings(), "gateway") is None
assert not [m for m in sys.modules if m.startswith("opentelemetry")]
try:
    start_tracing(TracingSettings(otlp_endpoint="http://c:4318"), "gateway")
except TracingError as exc:
    print(exc)
"""


def test_the_daemons_import_without_opentelemetry_and_say_what_to_install_when_on() -> None:
    done = subprocess.run([sys.executable, "-c", _WITHOUT_OTEL], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert INSTALL_HINT in done.stdout and "tracing.otlp_endpoint" in done.stdout
