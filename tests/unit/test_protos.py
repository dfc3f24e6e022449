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


def test_model_config_field_numbers_are_the_wire_contract() -> None:
    """The numbers of shared/OIP.md's minimum of model_config.proto."""
    from zeroserve.grpc_gen import model_config_pb2 as config

    def numbers(message) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}

    assert numbers(config.ModelConfig) == {
        "name": 1, "platform": 2, "max_batch_size": 4, "input": 5, "output": 6,
        "dynamic_batching": 11, "sequence_batching": 13, "ensemble_scheduling": 15,
        "backend": 17, "model_transaction_policy": 19, "response_cache": 24}
    assert numbers(config.ModelInput) == {"name": 1, "data_type": 2, "format": 3, "dims": 4,
                                          "is_shape_tensor": 6, "optional": 8}
    assert numbers(config.ModelOutput) == {"name": 1, "data_type": 2, "dims": 3}
    assert config.DataType.Value("TYPE_STRING") == 13 and config.DataType.Value("TYPE_BF16") == 14
