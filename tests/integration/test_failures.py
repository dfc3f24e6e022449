"""What each bad situation returns: no worker, full queue, deadlines, dead workers and brokers,
malformed frames. Liveness is 0.6 s in these tests (heartbeat 0.2 s x 3)."""
import concurrent.futures as cf
import signal
import time

import pytest
import zmq

pytestmark = pytest.mark.integration


def _ledger_cluster(cluster, *worker_args, workers=1, broker_args=()):
    cluster.broker(*broker_args)
    cluster.gateway()
    daemons = [cluster.test_worker("Ledger", *worker_args) for _ in range(workers)]
    cluster.wait_ready(workers)
    return daemons


def test_no_worker_waits_until_the_deadline_then_503(cluster):
    (worker,) = _ledger_cluster(cluster)
    assert worker.stop() == 0  # drains and leaves
    started = time.monotonic()
    status, body, _ = cluster.post("/ledger/mark", {"tag": "t"},
                                   headers={"X-Zeroserve-Timeout": "1.0"})
    waited = time.monotonic() - started
    assert status == 503 and "no worker" in body["error"]
    assert 0.9 <= waited < 5


def test_request_waiting_for_a_worker_is_served_when_one_joins(cluster):
    (worker,) = _ledger_cluster(cluster)
    worker.stop()
    with cf.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(cluster.post, "/ledger/mark", {"tag": "late"},
                              headers={"X-Zeroserve-Timeout": "20"})
        time.sleep(0.5)
        cluster.test_worker("Ledger")
        assert pending.result(timeout=30)[:2] == (200, "late")


def test_full_queue_answers_503_at_once_with_retry_after(cluster):
    _ledger_cluster(cluster, "--slots", "1", broker_args=("--max-queue", "2"))
    with cf.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(cluster.post, "/ledger/mark", {"tag": f"t{i}", "seconds": 0.5})
                   for i in range(8)]
        answers = [f.result(timeout=30) for f in futures]
    full = [a for a in answers if a[0] == 503]
    assert full and all("full" in a[1]["error"] and a[2].get("Retry-After") == "1"
                        for a in full)
    assert sum(a[0] == 200 for a in answers) >= 3


def test_request_expired_in_queue_is_504_and_never_executed(cluster):
    _ledger_cluster(cluster, "--slots", "1")
    with cf.ThreadPoolExecutor(2) as pool:
        busy = pool.submit(cluster.post, "/ledger/mark", {"tag": "busy", "seconds": 1.0})
        deadline = time.monotonic() + 5  # until the worker's only slot holds "busy"
        while not any(w["in_flight"] for w in cluster.stats()["workers"]):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status, body, _ = cluster.post("/ledger/mark", {"tag": "late"},
                                       headers={"X-Zeroserve-Timeout": "0.3"})
        assert busy.result(timeout=10)[0] == 200
    assert status == 504 and "not executed" in body["error"]
    time.sleep(0.3)
    assert "late" not in cluster.post("/ledger/executed", {})[1]


def test_deadline_passing_during_execution_is_504(cluster):
    _ledger_cluster(cluster)
    started = time.monotonic()
    status, body, _ = cluster.post("/ledger/mark", {"tag": "slow", "seconds": 2.0},
                                   headers={"X-Zeroserve-Timeout": "0.4"})
    assert status == 504 and "deadline" in body["error"]
    assert time.monotonic() - started < 1.5


def test_worker_killed_mid_request_is_retried_on_another(cluster):
    victim, survivor = _ledger_cluster(cluster, "--slots", "1", workers=2)
    with cf.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(cluster.post, "/ledger/mark", {"tag": f"r{i}", "seconds": 0.05},
                               headers={"X-Zeroserve-Timeout": "20"}) for i in range(80)]
        time.sleep(0.4)
        victim.kill()
        answers = [f.result(timeout=30) for f in futures]
    statuses = [a[0] for a in answers]
    assert statuses.count(200) == 80, statuses
    assert survivor.alive()


def test_broker_restart_is_rejoined_without_restarting_anyone(cluster):
    (worker,) = _ledger_cluster(cluster)
    gateway = cluster.daemons[1]
    assert cluster.post("/ledger/mark", {"tag": "before"})[0] == 200
    cluster.daemons[0].kill()
    cluster.broker()
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        status = cluster.post("/ledger/mark", {"tag": "after"},
                              headers={"X-Zeroserve-Timeout": "3"})[0]
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200
    assert worker.alive() and gateway.alive()


def test_sigterm_drains_in_flight_work_and_exits_zero(cluster):
    (worker,) = _ledger_cluster(cluster)
    with cf.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(cluster.post, "/ledger/mark", {"tag": "long", "seconds": 1.0})
        time.sleep(0.3)
        worker.signal(signal.SIGTERM)
        assert pending.result(timeout=10)[:2] == (200, "long")
    assert worker.proc.wait(10) == 0


@pytest.mark.parametrize("socket_port", ["frontend_port", "backend_port"])
def test_malformed_frames_are_dropped_and_the_broker_keeps_serving(cluster, socket_port):
    _ledger_cluster(cluster)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(f"tcp://127.0.0.1:{getattr(cluster, socket_port)}")
    junk = [[b""], [b"ZS1"], [b"ZS1", b"\x01"], [b"ZS1", b"\x01", b"id"],
            [b"ZS1", b"\x10", b"\xc1"], [b"ZS1", b"\x13", b"x" * 8, b"\x90"],
            [b"ZS1", b"\x03", b"id", b"stats", b"\xff\xff"], [b"XX", b"\x00"] * 3,
            [b"ZS1", b"\x12", b"\0" * 8, b"e", b"\x91\x93\xc4\x01a\x01\x05"]]
    for frames in junk * 50:
        sock.send_multipart(frames)
    sock.close(linger=2000)
    assert cluster.post("/ledger/mark", {"tag": "still"})[:2] == (200, "still")
    assert cluster.daemons[0].alive()
    deadline = time.monotonic() + 10  # on a loaded machine the junk may still be arriving
    while cluster.stats()["malformed_dropped"] < 100 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cluster.stats()["malformed_dropped"] >= 100


def test_gateway_without_a_broker_answers_503_not_404(cluster):
    cluster.gateway()
    cluster.wait_http()
    status, body = cluster.get("/readyz")
    assert status == 503 and "broker" in body["reason"]
    status, body, _ = cluster.post("/mlp/predict", {"x": [[0.0] * 64]})
    assert status == 503 and "does not answer" in body["error"]


def test_cluster_teardown_leaves_no_process_behind(tmp_path):
    from cluster import Cluster

    c = Cluster(tmp_path)
    c.start("mlp.py:MLP", workers=2)
    pids = [d.pid for d in c.daemons]
    c.stop()
    for pid in pids:
        try:
            state = open(f"/proc/{pid}/status").read()
        except FileNotFoundError:
            continue
        assert "zombie" in state, f"daemon {pid} still running"


def test_worker_whose_service_cannot_start_exits_1_saying_why(cluster):
    worker = cluster.test_worker("Broken")
    assert worker.proc.wait(20) == 1
    assert "creating Broken failed: FileNotFoundError: weights.bin" in worker.log()


def test_worker_given_a_bad_service_path_exits_with_a_usage_error(cluster):
    worker = cluster.worker("/nonexistent/file.py:Nope")
    assert worker.proc.wait(20) == 2
    assert "cannot load service" in worker.log()


def test_a_worker_that_reconnects_mid_call_keeps_it_and_is_one_worker(cluster):
    """The broker stops for 1 s, past the worker's liveness (0.6 s), while the worker runs a
    call that must not run twice: the worker reconnects on a new socket and says it still
    runs the batch; the broker keeps it in flight there and forgets the old connection at once
    (its own liveness, 5 s here, has not run out)."""
    broker = cluster.broker(env={"ZEROSERVE_HEARTBEAT_LIVENESS": "25"})
    cluster.gateway()
    worker = cluster.test_worker("Ledger")
    cluster.wait_ready(1)
    with cf.ThreadPoolExecutor(1) as pool:
        call = pool.submit(cluster.post, "/ledger/mark_once", {"tag": "held", "seconds": 2.5},
                           headers={"X-Zeroserve-Timeout": "20"})
        deadline = time.monotonic() + 5
        while sum(w["in_flight"] for w in cluster.stats()["workers"]) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        broker.signal(signal.SIGSTOP)
        time.sleep(1.0)
        broker.signal(signal.SIGCONT)
        status, body, _ = call.result(timeout=30)
    workers = cluster.stats()["workers"]
    tags = cluster.post("/ledger/executed", {})[1]
    assert (status, body) == (200, "held"), body
    assert tags.count("held") == 1
    assert len(workers) == 1, workers  # before: the old connection, until it was evicted
    assert "reconnecting" in worker.log()
    assert "reconnected, 1 of its batches still run on it" in broker.log()
