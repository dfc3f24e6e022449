"""The generated gRPC modules match protos/ (regenerate with scripts/gen_protos)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_modules_are_fresh() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_generated_modules_live_beside_tritonclient() -> None:
    """Our descriptors are in a pool of their own: both import in one process."""
    code = ("import tritonclient.grpc; "
            "from zeroserve.grpc_gen import grpc_service_pb2 as pb; "
            "print(pb.ModelInferRequest(model_name='m').SerializeToString())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "b'\\n\\x01m'"
