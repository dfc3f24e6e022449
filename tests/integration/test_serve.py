"""`zeroserve serve`: the whole cluster from one command, and nothing left behind after it."""
import os
import signal
import subprocess
import sys
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
