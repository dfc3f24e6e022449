"""Durable async jobs with real daemons: nothing acknowledged is lost when a worker is killed
and the broker restarts; cancel, failure after max_attempts, timeouts, idempotency, retention,
and bad submissions."""
import collections
import concurrent.futures as cf
import time

import numpy as np
import pytest

import zeroserve

pytestmark = pytest.mark.integration

JOB_ENV = {"ZEROSERVE_JOBS_LEASE_S": "2", "ZEROSERVE_JOBS_RETRY_BACKOFF_S": "0.2",
           "ZEROSERVE_JOBS_RETRY_BACKOFF_MAX_S": "1"}


def _start(cluster, workers=1, job_slots=1, env=None, also=()):
    """A broker, a gateway, ``workers`` Chores workers and one worker of each test service
    class in ``also``; the Chores workers."""
    cluster.env.update({**JOB_ENV, "ZEROSERVE_WORKER_JOB_SLOTS": str(job_slots), **(env or {})})
    cluster.broker()
    cluster.gateway()
    daemons = [cluster.test_worker("Chores") for _ in range(workers)]
    for cls in also:
        cluster.test_worker(cls)
    cluster.wait_ready(workers + len(also))
    return daemons


def _submit(cluster, endpoint, inputs, **extra):
    status, body, _ = cluster.post("/v1/jobs", {"service": "chores", "endpoint": endpoint,
                                                "inputs": inputs, **extra})
    assert status in (200, 202), body
    return body["id"]


def _wait(cluster, job_id, states=("succeeded", "failed", "cancelled"), timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job = cluster.get(f"/v1/jobs/{job_id}")
        if status == 200 and job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def _executions(cluster, kind="done"):
    if not cluster.job_log.exists():
        return collections.Counter()
    lines = cluster.job_log.read_text().splitlines()
    return collections.Counter(line.split()[1] for line in lines if line.startswith(kind + " "))


def _all_jobs(cluster):
    jobs, cursor = [], None
    while True:
        status, page = cluster.get("/v1/jobs?limit=1000" + (f"&cursor={cursor}" if cursor else ""),
                                   timeout=10.0)
        if status != 200:
            return None
        jobs += page["jobs"]
        cursor = page["next_cursor"]
        if cursor is None:
            return jobs


def test_500_jobs_survive_a_killed_worker_and_a_broker_restart(cluster):
    victim, _ = _start(cluster, workers=2, job_slots=2)
    n = 500
    with cf.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: _submit(cluster, "mark", {"tag": f"t{i}", "seconds": 0.03}),
                            range(n)))
    assert len(set(ids)) == n
    time.sleep(0.5)
    assert any(j["state"] == "running" for j in _all_jobs(cluster))
    victim.kill()  # kill -9 mid-job
    time.sleep(0.7)
    cluster.daemons[0].kill()  # the broker, kill -9 mid-run; then a new one on the same store
    cluster.broker()
    deadline = time.monotonic() + 90
    jobs = None
    while time.monotonic() < deadline:
        jobs = _all_jobs(cluster)
        if jobs is not None and all(j["state"] == "succeeded" for j in jobs):
            break
        time.sleep(0.5)
    assert jobs is not None
    states = collections.Counter(j["state"] for j in jobs)
    by_id = {j["id"]: j for j in jobs}
    missing = [job_id for job_id in ids if job_id not in by_id]
    runs = _executions(cluster)
    never_ran = [i for i in range(n) if runs[f"t{i}"] == 0]
    duplicates = {tag: count for tag, count in runs.items() if count > 1}
    retried = sum(1 for j in jobs if j["attempts"] > 1)
    print(f"jobs: submitted {n}, succeeded {states['succeeded']}, missing {len(missing)}, "
          f"duplicate executions {sum(c - 1 for c in duplicates.values())} "
          f"(of {len(duplicates)} jobs), retried after the kill {retried}")
    assert "recovered" in cluster.daemons[-1].log()  # the new broker took the jobs over
    assert retried >= 1  # the killed worker's attempts ran again
    assert not missing and states == {"succeeded": n}
    assert not never_ran
    assert all(cluster.get(f"/v1/jobs/{ids[i]}/result")[1]["tag"] == f"t{i}"
               for i in range(0, n, 50))


def test_cancel_a_queued_and_a_running_job(cluster):
    _start(cluster, job_slots=1)
    running = _submit(cluster, "until_cancelled", {"tag": "r", "seconds": 30})
    _wait(cluster, running, ("running",))
    deadline = time.monotonic() + 10
    while not _executions(cluster, "start")["r"] and time.monotonic() < deadline:
        time.sleep(0.05)
    queued = _submit(cluster, "mark", {"tag": "q"})
    assert cluster.get(f"/v1/jobs/{queued}")[1]["state"] == "queued"  # the only slot is busy
    status, body = _delete(cluster, queued)
    assert status == 200 and body["state"] == "cancelled"
    started = time.monotonic()
    status, body = _delete(cluster, running)
    assert status == 200 and body["cancel_requested"]
    job = _wait(cluster, running, timeout=10)
    assert job["state"] == "cancelled" and time.monotonic() - started < 5
    assert _executions(cluster, "saw-cancel")["r"] == 1
    after = _submit(cluster, "mark", {"tag": "after"})  # the slot is free again
    assert _wait(cluster, after)["state"] == "succeeded"
    assert _executions(cluster)["q"] == 0 and _executions(cluster)["r"] == 0
    assert _delete(cluster, queued)[0] == 409


def _delete(cluster, job_id):
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{cluster.url}/v1/jobs/{job_id}", method="DELETE")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_job_that_always_raises_fails_after_max_attempts_with_its_error(cluster):
    _start(cluster)
    client = zeroserve.Client(cluster.url)
    job = client.submit("chores", "always_fails", message="boom")
    with pytest.raises(zeroserve.JobFailed, match="RuntimeError: boom"):
        job.result(timeout=30)
    info = job.status()
    assert info["state"] == "failed" and info["attempts"] == 2 == info["max_attempts"]
    assert info["error"] == "RuntimeError: boom" and info["finished_at"] >= info["created_at"]
    assert cluster.get(f"/v1/jobs/{job.id}/result")[0] == 409
    assert job.retry()["state"] in ("queued", "running")  # retry: two more attempts
    assert job.wait(timeout=30)["attempts"] == 2


def test_a_job_past_its_timeout_is_stopped_and_fails(cluster):
    _start(cluster)
    job = _wait(cluster, _submit(cluster, "too_slow", {}), timeout=20)
    assert job["state"] == "failed" and "timed out after 1s" in job["error"]


def test_same_idempotency_key_returns_the_same_job_and_runs_it_once(cluster):
    _start(cluster)
    body = {"service": "chores", "endpoint": "mark", "inputs": {"tag": "once"},
            "idempotency_key": "order-42"}
    first = cluster.post("/v1/jobs", body)
    again = cluster.post("/v1/jobs", body)
    assert (first[0], again[0]) == (202, 200) and first[1]["id"] == again[1]["id"]
    _wait(cluster, first[1]["id"])
    assert _executions(cluster)["once"] == 1


def test_finished_jobs_are_removed_after_the_retention(cluster):
    _start(cluster, env={"ZEROSERVE_JOBS_RETENTION_S": "1"})
    client = zeroserve.Client(cluster.url)
    job = client.submit("chores", "double", x=np.ones((2, 4), np.float32))
    np.testing.assert_array_equal(job.result(timeout=20), np.full((2, 4), 2, np.float32))
    time.sleep(2.5)
    assert cluster.get(f"/v1/jobs/{job.id}")[0] == 404


def test_bad_submissions_are_refused_and_never_stored(cluster):
    _start(cluster, env={"ZEROSERVE_JOBS_MAX_INPUT_BYTES": "2000"})
    cases = [({"service": "ghost", "endpoint": "mark", "inputs": {}}, 404, "unknown service"),
             ({"service": "chores", "endpoint": "nope", "inputs": {}}, 404, "no task"),
             ({"service": "chores", "endpoint": "ping", "inputs": {}}, 400, "real-time"),
             ({"service": "chores", "endpoint": "mark", "inputs": {"tag": 3}}, 400, "tag"),
             ({"service": "chores", "endpoint": "double",
               "inputs": {"x": [[0.5] * 4] * 1000}}, 413, "at most 2000")]
    for body, status, message in cases:
        got, answer, _ = cluster.post("/v1/jobs", body)
        assert got == status and message in answer["error"], (body, answer)
    assert _all_jobs(cluster) == []
    assert cluster.post("/chores/mark", {"tag": "x"})[0] == 404  # tasks are not real-time


def test_jobs_over_grpc(cluster):
    """The same job calls through the gateway's zeroserve.v1.Jobs service."""
    _start(cluster, job_slots=1)
    client = zeroserve.Client(f"grpc://127.0.0.1:{cluster.grpc_port}")
    job = client.submit("chores", "double", x=np.ones((1, 4), np.float32))
    np.testing.assert_array_equal(job.result(timeout=20), np.full((1, 4), 2, np.float32))
    info = job.status()
    assert info["state"] == "succeeded" and info["attempts"] == 1 and info["error"] is None
    assert cluster.get(f"/v1/jobs/{job.id}")[1]["state"] == "succeeded"  # one store for both

    first = client.submit("chores", "mark", idempotency_key="grpc-7", tag="g")
    again = client.submit("chores", "mark", idempotency_key="grpc-7", tag="g")
    assert first.id == again.id
    failing = client.submit("chores", "always_fails", message="nope")
    with pytest.raises(zeroserve.JobFailed, match="RuntimeError: nope"):
        failing.result(timeout=30)
    with pytest.raises(zeroserve.Conflict):
        failing.api.result(failing.id)
    running = client.submit("chores", "until_cancelled", tag="gc", seconds=30)
    assert running.cancel()["cancel_requested"] or running.status()["state"] == "cancelled"
    assert running.wait(timeout=15)["state"] == "cancelled"
    with pytest.raises(zeroserve.NotFound, match="no task"):
        client.submit("chores", "nope")
    with pytest.raises(zeroserve.BadRequest, match="real-time"):
        client.submit("chores", "ping")
    with pytest.raises(zeroserve.NotFound):
        client.submit("ghost", "mark", tag="x")
    client.close()


def test_retry_over_grpc_runs_a_failed_job_again_with_its_attempts_counted_anew(cluster):
    _start(cluster, workers=0, also=("Errands",))
    client = zeroserve.Client(f"grpc://127.0.0.1:{cluster.grpc_port}")
    job = client.submit("errands", "flaky", tag="r", failures=3)  # 2 attempts, 3 failures
    with pytest.raises(zeroserve.JobFailed, match="RuntimeError: r: failure 2 of 3"):
        job.result(timeout=30)
    assert job.info["state"] == "failed" and job.info["attempts"] == 2 == job.info["max_attempts"]
    retried = job.retry()  # zeroserve.v1.Jobs/Retry
    assert retried["id"] == job.id and retried["state"] in ("queued", "running")
    assert retried["attempts"] <= 1 and retried["error"] is None
    assert job.result(timeout=30) == {"tag": "r", "tries": 4}  # failed once more, then ran
    info = job.status()
    assert info["state"] == "succeeded" and info["attempts"] == 2 and info["error"] is None
    tries = [line.split()[2] for line in cluster.job_log.read_text().splitlines()
             if line.startswith("try r ")]
    assert tries == ["1", "2", "1", "2"]  # two executions, then two more after the retry
    with pytest.raises(zeroserve.Conflict, match="only failed or cancelled"):
        job.retry()
    with pytest.raises(zeroserve.NotFound):
        job.api.retry("0" * 16)
    client.close()


def _pages(list_page, service, state, limit):
    """The job ids of every page of one listing, following ``next_cursor`` from the first
    page; ``list_page(service, state, limit, cursor)`` answers ``{"jobs", "next_cursor"}``."""
    pages, cursor = [], None
    while len(pages) < 100:
        page = list_page(service, state, limit, cursor)
        assert all(j["service"] == service for j in page["jobs"] if service)
        assert all(j["state"] == state for j in page["jobs"] if state)
        pages.append([j["id"] for j in page["jobs"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError(f"listing {service}/{state} never ended")


def test_list_filters_by_service_and_state_and_pages_over_grpc_and_http(cluster):
    _start(cluster, job_slots=2, also=("Errands",))
    grpc_client = zeroserve.Client(f"grpc://127.0.0.1:{cluster.grpc_port}")
    http_client = zeroserve.Client(cluster.url)
    submitted = []  # (service, final state, job), in submission order
    for i in range(5):
        submitted.append(("chores", "succeeded", grpc_client.submit("chores", "mark", tag=f"l{i}")))
        if i % 2 == 0:
            submitted.append(("errands", "succeeded",
                              http_client.submit("errands", "fetch", tag=f"e{i}")))
    for i in range(2):
        submitted.append(("chores", "failed", grpc_client.submit("chores", "always_fails",
                                                                 message=f"f{i}")))
    assert [job.wait(timeout=30)["state"] for _, _, job in submitted] == \
        [state for _, state, _ in submitted]

    def expected(service, state, limit):
        ids = [job.id for svc, st, job in submitted
               if service in (None, svc) and state in (None, st)]
        return [ids[i:i + limit] for i in range(0, len(ids), limit)] or [[]]

    def http_page(service, state, limit, cursor):
        query = {"service": service, "state": state, "limit": limit, "cursor": cursor}
        status, page = cluster.get("/v1/jobs?" + "&".join(
            f"{k}={v}" for k, v in query.items() if v is not None))
        assert status == 200, page
        return page

    listings = {"Client.jobs over gRPC": grpc_client.jobs, "GET /v1/jobs": http_page,
                "Client.jobs over HTTP": http_client.jobs}
    for name, list_page in listings.items():
        for service, state, limit in (("chores", "succeeded", 2), ("errands", None, 2),
                                      (None, "failed", 100), ("errands", "failed", 10),
                                      (None, None, 3)):
            assert _pages(list_page, service, state, limit) == expected(service, state, limit), \
                (name, service, state, limit)

    import grpc

    from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
    from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        stub = pb_grpc.JobsStub(channel)
        for request, message in ((pb.ListJobsRequest(state="bogus"), "unknown state 'bogus'"),
                                 (pb.ListJobsRequest(limit=0), "limit is 1..1000"),
                                 (pb.ListJobsRequest(limit=1001), "limit is 1..1000"),
                                 (pb.ListJobsRequest(cursor=-1), "cursor is 0..2**63-1")):
            with pytest.raises(grpc.RpcError) as err:
                stub.List(request, timeout=10)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, request
            assert message in err.value.details(), err.value.details()
    for query, message in (("state=bogus", "unknown state 'bogus'"),
                           ("service=chores&state=Succeeded", "unknown state 'Succeeded'"),
                           ("limit=0", "limit is 1..1000"), ("cursor=x", "cursor must be"),
                           (f"cursor={2**64}", "cursor must be")):
        status, answer = cluster.get(f"/v1/jobs?{query}")
        assert status == 400 and message in answer["error"], (query, answer)
    for client in (grpc_client, http_client):
        with pytest.raises(zeroserve.BadRequest, match="unknown state"):
            client.jobs(state="bogus")
    grpc_client.close()
    http_client.close()


def test_async_client_jobs_over_both_transports(cluster):
    import asyncio

    _start(cluster, job_slots=1)

    async def main(url):
        async with zeroserve.AsyncClient(url) as client:
            job = await client.submit("chores", "double", x=np.ones((1, 4), np.float32))
            np.testing.assert_array_equal(await job.result(timeout=20),
                                          np.full((1, 4), 2, np.float32))
            assert (await job.status())["state"] == "succeeded"
            failing = await client.submit("chores", "always_fails", message="async")
            with pytest.raises(zeroserve.JobFailed, match="async"):
                await failing.result(timeout=30)
            with pytest.raises(zeroserve.NotFound):
                await client.submit("chores", "nope")
            done = await client.jobs(service="chores", state="succeeded", limit=1000)
            assert job.id in [j["id"] for j in done["jobs"]] and done["next_cursor"] is None
            assert failing.id in [j["id"] for j in (await client.jobs(state="failed"))["jobs"]]

    for url in (cluster.url, f"grpc://127.0.0.1:{cluster.grpc_port}"):
        asyncio.run(main(url))
