"""EventReport: a client-caused event is logged once, then at most once per interval."""
from __future__ import annotations

from gateway.accept import EventReport


def test_first_event_is_reported_then_one_line_per_interval_with_the_count() -> None:
    report = EventReport(interval_s=5.0)
    assert report.note(100.0) == 1
    lines = [report.note(100.0 + i * 0.01) for i in range(1, 1000)]  # 100 a second
    assert [n for n in lines if n is not None] == [500]  # at 105.0: the 500 since 100.0
    assert report.note(110.5) == 500
    assert report.total == 1001
