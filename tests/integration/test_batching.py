"""Adaptive batching end to end: concurrent callers share batches and get exactly their rows."""
import concurrent.futures as cf

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def _batchy(cluster, workers=1):
    cluster.broker()
    cluster.gateway()
    for _ in range(workers):
        cluster.test_worker("Batchy", "--slots", "1")
    cluster.wait_ready(workers)


def test_concurrent_callers_share_batches_and_get_exactly_their_rows(cluster):
    _batchy(cluster)

    def call(i):
        rows = 1 + i % 3
        x = np.full((rows, 4), float(i), np.float32)
        status, body, _ = cluster.post("/batchy/tag", {"x": x.tolist()})
        return i, rows, status, np.array(body, np.float32) if status == 200 else body

    with cf.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(call, range(160)))
    for i, rows, status, out in answers:
        assert status == 200, out
        assert out.shape == (rows, 4)
        np.testing.assert_array_equal(out[:, :3], float(i))  # its own rows, nobody else's
    batch_sizes = [out[0, 3] for *_, out in answers]
    assert max(batch_sizes) > 1
    stats = cluster.stats()["endpoints"]["batchy.tag"]
    assert stats["mean_batch_size"] > 1.5
    assert max(int(k) for k in stats["batch_sizes"]) <= 32


def test_requests_of_different_shapes_never_share_a_batch(cluster):
    _batchy(cluster)

    def call(i):
        width = 3 if i % 2 else 5  # shapes past the batch dimension differ
        status, body, _ = cluster.post("/batchy/width", {"x": [[float(i)] * width]})
        return i, status, body

    with cf.ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(call, range(96)))
    for i, status, body in answers:
        assert status == 200, body
        assert body["first"] == [float(i)]
    assert max(body["rows"][0] for _, _, body in answers) > 1  # batches did form
    assert cluster.stats()["endpoints"]["batchy.width"]["statuses"].get(500) is None


def test_wrong_batch_size_from_the_endpoint_is_a_clear_500_to_each_caller(cluster):
    _batchy(cluster)
    answers: list = []
    with cf.ThreadPoolExecutor(8) as pool:
        for _ in range(10):  # until a batch of more than one row forms (a busy host may not)
            answers += pool.map(
                lambda i: cluster.post("/batchy/wrong_rows", {"x": [[i, 0, 0, 0]]}), range(24))
            if any(status == 500 for status, _, _ in answers):
                break
    errors = [body["error"] for status, body, _ in answers if status == 500]
    assert errors and all("rows" in e for e in errors)
    assert all(status in (200, 500) for status, _, _ in answers)
