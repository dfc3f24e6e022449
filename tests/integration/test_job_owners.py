"""With API keys on, a job belongs to the key name that submitted it, over HTTP and gRPC:
another key (of the same service or another) gets the 404 of an unknown id for get, result,
cancel and retry and never sees the job listed; an admin key sees it; a rotated key of the
same name keeps it; idempotency keys are the owner's; a listing's pages hold the caller's
own jobs only, ``limit`` to a page."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import grpc
import pytest
from cluster import Cluster

import zeroserve
from gateway.api_keys import digest, new_key
from zeroserve.grpc_gen import zeroserve_serving_pb2 as pb
from zeroserve.grpc_gen import zeroserve_serving_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

KEYS = {name: new_key() for name in ("a-old", "a", "b", "c", "admin")}


def _start(cluster: Cluster) -> None:
    keys = cluster.tmp / "keys.yaml"
    keys.write_text(f"""keys:
  - {{name: team-a, sha256: {digest(KEYS["a-old"])}, services: [chores]}}
  - {{name: team-a, sha256: {digest(KEYS["a"])}, services: [chores]}}
  - {{name: team-b, sha256: {digest(KEYS["b"])}, services: [chores]}}
  - {{name: team-c, sha256: {digest(KEYS["c"])}, services: [errands]}}
  - {{name: ops, sha256: {digest(KEYS["admin"])}, services: ["*"], role: admin}}
""")
    cluster.broker()
    cluster.gateway(env={"ZEROSERVE_GATEWAY_API_KEYS_FILE": str(keys)})
    cluster.test_worker("Chores")
    cluster.wait_ready(1)


def _http(cluster: Cluster, method: str, path: str, who: str,
          body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        cluster.url + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-API-Key": KEYS[who], "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def _http_calls(job_id: str) -> list[tuple[str, str, Any]]:
    return [("GET", f"/v1/jobs/{job_id}", None), ("GET", f"/v1/jobs/{job_id}/result", None),
            ("DELETE", f"/v1/jobs/{job_id}", None), ("POST", f"/v1/jobs/{job_id}/retry", {})]


def _grpc_error(call: Any, request: Any, who: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call(request, metadata=(("authorization", f"Bearer {KEYS[who]}"),), timeout=10)
    return err.value.code(), err.value.details()


def _unknown(job_id: str) -> str:
    return "0" * len(job_id)


def test_a_job_is_seen_by_its_owner_and_admins_only_over_http_and_grpc(cluster: Cluster) -> None:
    _start(cluster)
    grpc_url = f"grpc://127.0.0.1:{cluster.grpc_port}"
    jobs = []
    for url in (cluster.url, grpc_url):
        with zeroserve.Client(url, api_key=KEYS["a-old"]) as client:
            job = client.submit("chores", "mark", tag=f"owned-{url[:4]}")
            assert job.result(timeout=20)["tag"] == f"owned-{url[:4]}"
            jobs.append(job.id)

    channel = grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
    stub = pb_grpc.JobsStub(channel)
    for job_id in jobs:
        for who in ("b", "c"):  # the same service, and another one: both 404, never 403
            for (method, path, body), (_, unknown_path, _) in zip(
                    _http_calls(job_id), _http_calls(_unknown(job_id)), strict=True):
                status, answer = _http(cluster, method, path, who, body)
                unknown_status, unknown_answer = _http(cluster, method, unknown_path, who, body)
                assert status == unknown_status == 404, (who, method, path, answer)
                assert json.dumps(answer) == json.dumps(unknown_answer).replace(
                    _unknown(job_id), job_id), (who, path)
            for call in (stub.Get, stub.Result, stub.Cancel, stub.Retry):
                code, details = _grpc_error(call, pb.JobRequest(id=job_id), who)
                unknown_code, unknown_details = _grpc_error(
                    call, pb.JobRequest(id=_unknown(job_id)), who)
                assert code is unknown_code is grpc.StatusCode.NOT_FOUND, (who, details)
                assert details == unknown_details.replace(_unknown(job_id), job_id)
        # the owner (under its rotated key) and an admin see it, its result, in listings
        for who in ("a", "admin"):
            status, answer = _http(cluster, "GET", f"/v1/jobs/{job_id}", who)
            assert status == 200 and answer["state"] == "succeeded", answer
            assert "owner" not in answer
            status, answer = _http(cluster, "GET", f"/v1/jobs/{job_id}/result", who)
            assert status == 200 and answer["tag"].startswith("owned-"), answer

    for who, seen in (("a", jobs), ("admin", jobs), ("b", []), ("c", [])):
        status, page = _http(cluster, "GET", "/v1/jobs", who)
        assert status == 200 and [j["id"] for j in page["jobs"]] == seen, (who, page)
        with zeroserve.Client(grpc_url, api_key=KEYS[who]) as client:
            assert [j["id"] for j in client.jobs()["jobs"]] == seen, who

    # an idempotency key is its owner's: the same key from another team is another job
    status, first = _http(cluster, "POST", "/v1/jobs", "a", {
        "service": "chores", "endpoint": "mark", "inputs": {"tag": "k"},
        "idempotency_key": "shared"})
    assert status == 202, first
    status, theirs = _http(cluster, "POST", "/v1/jobs", "b", {
        "service": "chores", "endpoint": "mark", "inputs": {"tag": "k"},
        "idempotency_key": "shared"})
    assert status == 202 and theirs["id"] != first["id"], theirs
    status, again = _http(cluster, "POST", "/v1/jobs", "a-old", {
        "service": "chores", "endpoint": "mark", "inputs": {"tag": "k"},
        "idempotency_key": "shared"})
    assert status == 200 and again["id"] == first["id"], again
    channel.close()


def test_listing_pages_hold_only_the_callers_jobs(cluster: Cluster) -> None:
    _start(cluster)
    mine: list[str] = []
    for i in range(5):
        for who in ("b", "a", "admin"):
            status, job = _http(cluster, "POST", "/v1/jobs", who, {
                "service": "chores", "endpoint": "mark", "inputs": {"tag": f"{who}{i}"}})
            assert status == 202, job
            if who == "a":
                mine.append(job["id"])
    pages: list[list[str]] = []
    cursor = None
    while True:
        status, page = _http(cluster, "GET", "/v1/jobs?limit=2" + (
            f"&cursor={cursor}" if cursor is not None else ""), "a")
        assert status == 200, page
        pages.append([job["id"] for job in page["jobs"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1] and sum(pages, []) == mine
    with zeroserve.Client(f"grpc://127.0.0.1:{cluster.grpc_port}", api_key=KEYS["a"]) as client:
        grpc_pages, cursor = [], None
        while True:
            page = client.jobs(limit=2, cursor=cursor)
            grpc_pages.append([job["id"] for job in page["jobs"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert grpc_pages == pages
    status, page = _http(cluster, "GET", "/v1/jobs?limit=100", "admin")
    assert status == 200 and len(page["jobs"]) == 15
