"""The pieces of ``scripts/image``: the container engine (``engine``), the image build
(``build``), the four-container fleet test (``fleet_test``) and the Kubernetes overlay made from
a deployment file (``manifests``)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_TAG = "localhost/zeroserve:latest"
SERVICE_MOUNT = "/srv/service"  # where the image holds the service's folder
