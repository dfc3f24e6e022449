"""`zeroserve serve`: the whole cluster from one command, and nothing left behind after it."""
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cluster import EXAMPLES, FAST_ENV, ROOT, free_port
from reference_models import mlp, sample_input

import zeroserve

pytestmark = pytest.mark.integration


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def test_serve_starts_the_cluster_and_stops_every_process(tmp_path):
    http, front, back, metrics = free_port(), free_port(), free_port(), free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zeroserve", "serve", str(EXAMPLES / "mlp.py") + ":MLP",
         "--http-port", str(http), "--grpc-port", str(free_port()), "--host", "127.0.0.1",
         "--metrics-port", str(metrics), "--workers", "2",
         "--frontend", f"tcp://127.0.0.1:{front}", "--backend", f"tcp://127.0.0.1:{back}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
        env={**os.environ, **FAST_ENV})
    try:
        client = zeroserve.Client(f"http://127.0.0.1:{http}")
        deadline = time.monotonic() + 60
        while "serve: ready" not in (tmp_path / "serve.log").read_text():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve never became ready"
            time.sleep(0.2)
        kids = children_of(proc.pid)
        assert len(kids) == 4  # broker, gateway, 2 workers
        x = sample_input(1)
        np.testing.assert_allclose(client.call("mlp", "predict", x=x), mlp(x), rtol=1e-5)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as resp:
            assert b"zeroserve_broker" in resp.read()  # the broker took --metrics-port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not [k for k in kids if Path(f"/proc/{k}").exists()
                    and "zombie" not in Path(f"/proc/{k}/status").read_text()]
    finally:
        if proc.poll() is None:
            leftovers = children_of(proc.pid)
            proc.kill()
            proc.wait()
            for k in leftovers:
                os.kill(k, signal.SIGKILL)
        log.close()


def _serve(tmp_path: Path, workers: int) -> tuple[subprocess.Popen, int, Path]:
    http = free_port()
    log_path = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zeroserve", "serve", str(EXAMPLES / "mlp.py") + ":MLP",
         "--http-port", str(http), "--grpc-port", str(free_port()), "--host", "127.0.0.1",
         "--metrics-port", "0", "--workers", str(workers),
         "--frontend", f"tcp://127.0.0.1:{free_port()}",
         "--backend", f"tcp://127.0.0.1:{free_port()}"],
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, cwd=str(ROOT),
        env={**os.environ, **FAST_ENV})
    return proc, http, log_path


def _wait_for_log(proc: subprocess.Popen, log_path: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log_path.read_text():
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, f"no {text!r} in:\n{log_path.read_text()}"
        time.sleep(0.1)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and its children if it is still running."""
    if proc.poll() is None:
        for k in children_of(proc.pid):
            os.kill(k, signal.SIGKILL)
        proc.kill()
        proc.wait()


def _worker_pids(pid: int) -> list[int]:
    return [k for k in children_of(pid)
            if b"\0worker\0" in Path(f"/proc/{k}/cmdline").read_bytes()]


def test_serve_restarts_a_killed_worker_and_every_call_is_answered(tmp_path):
    proc, http, log_path = _serve(tmp_path, workers=2)
    try:
        _wait_for_log(proc, log_path, "serve: ready", 60)
        client = zeroserve.Client(f"http://127.0.0.1:{http}")
        x = sample_input(1)
        answered, failed = [], []
        stop = time.monotonic() + 4.0

        def call_until_stop() -> None:
            while time.monotonic() < stop:
                try:
                    answered.append(client.call("mlp", "predict", x=x, timeout=5.0))
                except zeroserve.ZeroserveError as exc:
                    failed.append(exc)

        callers = [threading.Thread(target=call_until_stop) for _ in range(4)]
        for t in callers:
            t.start()
        time.sleep(1.0)
        victim = _worker_pids(proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        _wait_for_log(proc, log_path, "serve: restarted worker-", 10)
        for t in callers:
            t.join(30)
        print(f"serve under load, a worker killed: {len(answered)} answered, "
              f"{len(failed)} failed")
        assert not failed and len(answered) > 50
        assert proc.poll() is None, "serve stopped the cluster"
        workers = _worker_pids(proc.pid)
        assert len(workers) == 2 and victim not in workers
        np.testing.assert_allclose(client.call("mlp", "predict", x=x), mlp(x), rtol=1e-5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        _kill_tree(proc)


def test_serve_gives_up_on_a_worker_that_keeps_crashing(tmp_path):
    proc, http, log_path = _serve(tmp_path, workers=1)
    try:
        _wait_for_log(proc, log_path, "serve: ready", 60)
        for _ in range(5):  # the policy's max_crashes
            pids = []
            deadline = time.monotonic() + 20
            while not pids:
                assert time.monotonic() < deadline, log_path.read_text()
                pids = _worker_pids(proc.pid)
                time.sleep(0.05)
            os.kill(pids[0], signal.SIGKILL)
            while Path(f"/proc/{pids[0]}").exists() and \
                    "zombie" not in Path(f"/proc/{pids[0]}/status").read_text():
                time.sleep(0.02)
            if proc.poll() is not None:
                break
            _wait_for_log_count(log_path, "serve: worker-1 exited", _ + 1, 10)
        assert proc.wait(30) == 1
        assert "giving up" in log_path.read_text()
    finally:
        _kill_tree(proc)


def _wait_for_log_count(log_path: Path, text: str, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while log_path.read_text().count(text) < count:
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
