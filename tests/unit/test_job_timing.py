"""A job slot's timing rules on a fake clock: timeouts, cancel grace, keep-alives, respawns."""
from worker.job_timing import Overdue, SlotTiming


def running(now=0.0, timeout_s=60.0, lease_s=30.0, **rules):
    timing = SlotTiming(**rules)
    timing.begin(now, timeout_s, lease_s)
    return timing


def test_an_idle_slot_is_never_overdue_nor_kept_alive():
    timing = SlotTiming()
    assert timing.overdue(1e9) is None and not timing.keep_alive_due(1e9)


def test_an_attempt_is_stopped_only_once_past_its_timeout():
    timing = running(now=100.0, timeout_s=5.0)
    assert timing.overdue(105.0) is None
    assert timing.overdue(105.001) is Overdue.TIMED_OUT
    assert timing.reason(Overdue.TIMED_OUT) == "timed out after 5s"


def test_a_cancel_ignored_past_the_grace_stops_the_attempt():
    timing = running(now=0.0, cancel_grace_s=10.0)
    timing.cancel(2.0)
    assert timing.cancelled
    assert timing.overdue(12.0) is None
    assert timing.overdue(12.5) is Overdue.IGNORED_CANCEL
    assert timing.reason(Overdue.IGNORED_CANCEL) == "cancelled, and still running after 10s"


def test_the_cancel_grace_runs_from_the_first_ask():
    timing = running(now=0.0, cancel_grace_s=10.0)
    timing.cancel(1.0)
    timing.cancel(9.0)
    assert timing.overdue(11.5) is Overdue.IGNORED_CANCEL


def test_the_timeout_is_told_before_an_ignored_cancel():
    timing = running(now=0.0, timeout_s=5.0, cancel_grace_s=1.0)
    timing.cancel(0.0)
    assert timing.overdue(6.0) is Overdue.TIMED_OUT


def test_a_finished_attempt_is_never_overdue_and_a_new_one_is_not_cancelled():
    timing = running(now=0.0, timeout_s=5.0)
    timing.cancel(1.0)
    timing.end()
    assert not timing.cancelled and timing.overdue(100.0) is None
    timing.begin(100.0, 5.0, 30.0)
    assert not timing.cancelled and timing.overdue(104.0) is None


def test_a_cancel_with_no_attempt_running_is_ignored():
    timing = SlotTiming()
    timing.cancel(1.0)
    assert not timing.cancelled


def test_keep_alive_is_due_after_a_third_of_the_lease_without_a_report():
    timing = running(now=0.0, lease_s=3.0)
    assert not timing.keep_alive_due(0.5)
    assert timing.keep_alive_due(1.0)
    timing.reported(1.0)
    assert not timing.keep_alive_due(1.5)
    assert timing.keep_alive_due(2.0)


def test_any_report_from_the_child_postpones_the_keep_alive():
    timing = running(now=0.0, lease_s=3.0)
    timing.reported(0.75)  # a progress event went to the broker
    assert not timing.keep_alive_due(1.5) and timing.keep_alive_due(1.75)


def test_a_cancelled_attempt_within_its_grace_is_still_kept_alive():
    timing = running(now=0.0, lease_s=3.0, cancel_grace_s=10.0)
    timing.cancel(0.5)
    assert timing.overdue(1.0) is None and timing.keep_alive_due(1.0)


def test_a_child_that_cannot_load_is_respawned_only_after_the_wait():
    timing = SlotTiming(respawn_wait_s=5.0)
    assert timing.may_respawn(0.0)
    timing.broken(10.0)
    assert not timing.may_respawn(14.5)
    assert timing.may_respawn(15.0)
