from zeroserve.cli.restarts import RestartPolicy


def test_a_crash_is_restarted_after_a_backoff_that_doubles_up_to_its_cap():
    policy = RestartPolicy(min_backoff_s=0.5, max_backoff_s=2.0, max_crashes=10, window_s=60.0)
    assert [policy.crashed("worker-1", 100.0) for _ in range(4)] == [100.5, 101.0, 102.0, 102.0]


def test_daemons_are_counted_apart():
    policy = RestartPolicy(min_backoff_s=1.0, max_crashes=2, window_s=60.0)
    assert policy.crashed("worker-1", 0.0) == 1.0
    assert policy.crashed("worker-2", 0.0) == 1.0
    assert policy.crashes("worker-1") == policy.crashes("worker-2") == 1


def test_gives_up_after_max_crashes_within_the_window():
    policy = RestartPolicy(min_backoff_s=0.1, max_crashes=3, window_s=10.0)
    assert policy.crashed("w", 0.0) is not None
    assert policy.crashed("w", 1.0) is not None
    assert policy.crashed("w", 2.0) is None


def test_crashes_older_than_the_window_are_forgotten():
    policy = RestartPolicy(min_backoff_s=0.1, max_crashes=3, window_s=10.0)
    policy.crashed("w", 0.0)
    policy.crashed("w", 5.0)
    assert policy.crashed("w", 11.0) == 11.0 + 0.1 * 2  # the crash at 0.0 has left the window
    assert policy.crashes("w") == 2
