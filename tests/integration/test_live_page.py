"""The live page (``GET /ui``) in a real browser: headless Chromium loads it from the gateway
and from the broker's metrics port while a load runs, and the numbers it renders match the
broker's statistics and move with the load."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import Browser
from cluster import Cluster

from gateway.api_keys import digest, new_key

pytestmark = pytest.mark.integration

ENDPOINT = "batchy.tag"
READ = """JSON.stringify({
  updates: +document.getElementById("updates").textContent,
  status: document.getElementById("status").textContent,
  endpoint: Object.fromEntries(Array.from(document.querySelectorAll(
    '#endpoints tr[data-endpoint="ENDPOINT"] td')).map(td => [td.dataset.field, td.textContent])),
  workers: Array.from(document.querySelectorAll("#workers tr[data-worker]"))
    .map(tr => tr.getAttribute("data-worker")).sort(),
  points: +(document.getElementById("plot-rate").dataset.points || 0),
  resources: performance.getEntriesByType("resource").map(r => r.name),
})""".replace("ENDPOINT", ENDPOINT)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path)
    try:
        yield b
    finally:
        b.close()


class Load:
    """Threads that call ``batchy.tag`` without pause until stopped."""

    def __init__(self, cluster: Cluster, threads: int = 4) -> None:
        self.cluster = cluster
        self.done = threading.Event()
        self.answered = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while not self.done.is_set():
            status, answer, _ = self.cluster.post("/batchy/tag", {"x": [[1.0, 2.0, 3.0, 4.0]]})
            assert status == 200, answer
            self.answered += 1

    def stop(self) -> None:
        self.done.set()
        for t in self.threads:
            t.join(30)


def _read(browser: Browser) -> dict:
    return json.loads(browser.evaluate(READ))


def _read_after_new_data(browser: Browser, cluster: Cluster, updates: int = 2
                         ) -> tuple[dict, dict, dict]:
    """The broker's statistics, the page once it drew ``updates`` answers more, then the
    statistics again: what the page shows was read between the two."""
    before = cluster.stats()
    seen = _read(browser)["updates"]
    browser.wait_for(f'+document.getElementById("updates").textContent >= {seen + updates}')
    page = _read(browser)
    return before, page, cluster.stats()


def test_the_page_shows_the_cluster_live_under_load(cluster: Cluster, browser: Browser,
                                                    tmp_path: Path) -> None:
    cluster.broker()
    cluster.gateway()
    cluster.test_worker("Batchy")
    cluster.test_worker("Batchy")
    cluster.test_worker("Streamer")
    cluster.wait_ready(3)
    stream = urllib.request.Request(cluster.url + "/streamer/count", method="POST",
                                    data=json.dumps({"n": 3}).encode(),
                                    headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(stream, timeout=10) as resp:
        assert resp.status == 200 and resp.read()
    with urllib.request.urlopen(cluster.url + "/ui", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        page = resp.read().decode()
    assert "http://" not in page and "https://" not in page  # nothing from the network
    load = Load(cluster)
    try:
        browser.open(cluster.url + "/ui")
        browser.wait_for(f"!!document.querySelector('#endpoints tr[data-endpoint=\"{ENDPOINT}\"]')")
        before, first, after = _read_after_new_data(browser, cluster)
        e0, e1 = before["endpoints"][ENDPOINT], after["endpoints"][ENDPOINT]
        shown = first["endpoint"]
        assert e0["requests"] <= int(shown["requests"]) <= e1["requests"], (shown, e0, e1)
        assert e0["batches"] <= int(shown["batches"]) <= e1["batches"]
        assert shown["limits"] == "32 / 50 ms"
        assert float(shown["rate"]) > 0 and float(shown["batch_now"]) >= 1
        assert first["workers"] == sorted(w["worker_id"] for w in after["workers"])
        assert first["status"].startswith("live")
        streams = browser.evaluate('document.querySelector(\'#endpoints tr[data-endpoint='
                                   '"streamer.count"] td[data-field=streams]\').textContent')
        assert streams.startswith("0 active, 1 started, 3 chunks"), streams
        origin = cluster.url + "/ui/data"
        assert first["resources"] and all(r == origin for r in first["resources"])

        browser.wait_for(f'+document.getElementById("updates").textContent >= '
                         f'{first["updates"] + 3}')
        before, second, after = _read_after_new_data(browser, cluster)
        moved = second["endpoint"]
        assert int(moved["requests"]) > int(shown["requests"])  # it changed with the load
        assert before["endpoints"][ENDPOINT]["requests"] <= int(moved["requests"]) \
            <= after["endpoints"][ENDPOINT]["requests"]
        assert second["updates"] > first["updates"] and second["points"] > first["points"]
        browser.screenshot(tmp_path / "ui-gateway.png")

        # the same page on the broker's metrics port, from its snapshot
        browser.open(f"http://127.0.0.1:{cluster.metrics_port}/ui")
        browser.wait_for('+document.getElementById("updates").textContent >= 2')
        broker_page = _read(browser)
        assert int(broker_page["endpoint"]["requests"]) > 0
        assert broker_page["workers"] == first["workers"] and len(first["workers"]) == 3
        browser.screenshot(tmp_path / "ui-broker.png")
    finally:
        load.stop()
    assert (tmp_path / "ui-gateway.png").stat().st_size > 10_000
    assert load.answered > 0


def test_with_api_keys_the_page_asks_for_one_and_its_data_calls_carry_it(
        cluster: Cluster, browser: Browser, tmp_path: Path) -> None:
    key, other = new_key(), new_key()
    keys = cluster.tmp / "keys.yaml"
    keys.write_text(f"keys:\n  - {{name: team, sha256: {digest(key)}, services: [batchy]}}\n"
                    f"  - {{name: other, sha256: {digest(other)}, services: [probe]}}\n")
    cluster.broker()
    cluster.gateway(env={"ZEROSERVE_GATEWAY_API_KEYS_FILE": str(keys)})
    cluster.test_worker("Batchy")
    cluster.wait_ready(1)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(cluster.url + "/ui/data", timeout=5)
    assert refused.value.code == 401
    request = urllib.request.Request(cluster.url + "/ui/data",
                                     headers={"Authorization": f"Bearer {other}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert json.loads(resp.read())["stats"]["endpoints"] == {}  # not its service

    browser.open(cluster.url + "/ui")  # the page itself is public
    browser.wait_for('getComputedStyle(document.getElementById("keyform")).display == "block"')
    assert _read(browser)["updates"] == 0
    browser.evaluate(f'document.getElementById("key").value = {json.dumps(key)}; '
                     'document.querySelector("#keyform button").click(); true')
    browser.wait_for('+document.getElementById("updates").textContent >= 2')
    shown = _read(browser)
    assert shown["endpoint"]["name"] == ENDPOINT and shown["status"].startswith("live")
    assert browser.evaluate(
        'getComputedStyle(document.getElementById("keyform")).display') == "none"
    browser.screenshot(tmp_path / "ui-with-key.png")
