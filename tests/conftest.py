"""Shared fixtures: real daemons as subprocesses on ephemeral loopback ports."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "examples"))

from cluster import Cluster  # noqa: E402


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two test processes per core. Most tests wait on daemons that run as
    processes of their own, so one test per core leaves the cores idle half the time."""
    return 2 * (os.cpu_count() or 1)


@pytest.fixture
def cluster(tmp_path: Path):
    """A cluster with nothing started; whatever the test starts is stopped afterwards."""
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()
