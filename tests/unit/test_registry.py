"""Credit-based, least-recently-used load balancing and liveness, with plain-float time."""
from broker.registry import WorkerRegistry


def make(n=3, slots=1, liveness=3.0):
    reg = WorkerRegistry(liveness)
    for i in range(n):
        reg.register(f"w{i}".encode(), f"w{i}", "svc", {"e": {}}, slots, now=0.0)
    return reg


def test_least_recently_used_worker_gets_the_next_request():
    reg = make(3, slots=1)
    order = [reg.acquire("svc", i).worker_id for i in range(3)]
    assert order == ["w0", "w1", "w2"]
    assert reg.acquire("svc", 9) is None
    w1 = reg.get(b"w1")
    reg.release(w1, 1)
    assert reg.acquire("svc", 10) is w1


def test_worker_only_gets_as_many_batches_as_it_has_slots():
    reg = make(1, slots=2)
    assert reg.acquire("svc", 1) and reg.acquire("svc", 2)
    assert reg.acquire("svc", 3) is None
    assert reg.busy_slots("svc") == 2 and reg.free_slots("svc") == 0


def test_draining_worker_gets_no_new_work():
    reg = make(1, slots=4)
    reg.drain(b"w0")
    assert reg.acquire("svc", 1) is None and reg.count("svc") == 0


def test_silent_worker_expires_after_liveness():
    reg = make(2, liveness=3.0)
    reg.touch(b"w0", 2.5)
    assert [w.worker_id for w in reg.expired(3.5)] == ["w1"]


def test_other_services_are_not_chosen():
    reg = make(1)
    assert reg.acquire("other", 1) is None


def test_removed_worker_is_never_chosen_and_service_schema_is_kept():
    reg = make(1)
    reg.remove(b"w0")
    assert reg.acquire("svc", 1) is None and "svc" in reg.services


def test_a_batch_waiting_on_dependency_calls_frees_its_slot_until_it_runs_again():
    from broker.registry import WorkerRegistry

    registry = WorkerRegistry(3.0)
    worker = registry.register(b"W", "w", "svc", {}, 1, now=0.0)
    assert registry.acquire("svc", 1) is worker and not registry.has_free("svc")
    registry.mark_waiting(worker, 1, True)
    assert registry.has_free("svc") and registry.busy_slots("svc") == 0
    assert registry.acquire("svc", 2) is worker and not registry.has_free("svc")
    registry.mark_waiting(worker, 1, False)  # running again: two batches on one slot
    assert worker.free == -1 and not registry.has_free("svc")
    registry.release(worker, 2)
    registry.release(worker, 1)
    assert registry.has_free("svc") and worker.free == 1
    registry.mark_waiting(worker, 99, True)  # not in flight: ignored
    assert worker.free == 1
