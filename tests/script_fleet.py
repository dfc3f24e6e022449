"""scripts/cluster run as a command on a run directory and free ports of the test's own."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cluster import FAST_ENV, ROOT, free_port

SCRIPTS = ROOT / "scripts"


class ScriptFleet:
    """Runs ``scripts/cluster`` (and ``scripts/autoscale``) on ``run_dir``; the test calls
    ``run("down")`` at the end, whatever happened."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.http = free_port()
        self.frontend = free_port()
        self.env = {**os.environ, **FAST_ENV}

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """Run ``scripts/cluster ARGS``; its stdout and stderr (asserting exit 0 if ``check``)."""
        done = self.command("cluster", *args, timeout=timeout)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    def command(self, script: str, *args: str,
                timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SCRIPTS / script), "--run-dir",
                               str(self.run_dir), *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout)

    def ports(self) -> list[str]:
        return ["--http-port", str(self.http), "--grpc-port", str(free_port()),
                "--frontend-port", str(self.frontend), "--backend-port", str(free_port()),
                "--metrics-port", str(free_port())]

    def up(self, service: str, *args: str, check: bool = True) -> str:
        return self.run("up", service, *self.ports(), *args, check=check)

    def autoscale(self, *args: str) -> subprocess.Popen:
        """``scripts/autoscale`` on this fleet, running until the caller stops it."""
        return subprocess.Popen([sys.executable, str(SCRIPTS / "autoscale"), "--run-dir",
                                 str(self.run_dir), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=self.env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def pids(self, kind: str) -> list[int]:
        """Pids of the daemons of ``kind`` that have a pidfile (removed once one has left)."""
        return [int(p.read_text()) for p in sorted(self.run_dir.glob(f"{kind}-*.pid"))]

    def workers(self) -> int:
        return len(self.pids("worker"))
