"""CURVE key roles: which channels a key may use, by the folder of the allowed-keys directory
it is in."""
from pathlib import Path

from zeroserve.curve import (
    ANY_ROLE,
    WORKER_CONTROL_OPS,
    Channel,
    allowed_roles,
    generate,
    may_use,
    role_of,
)


def test_generated_keys_go_to_the_folder_of_their_role(tmp_path: Path) -> None:
    generate(tmp_path, ["broker", "gateway", "worker-7", "status"])
    roles = allowed_roles(tmp_path / "allowed")
    assert sorted(roles.values()) == ["gateway", "operator", "worker"]
    assert not (tmp_path / "allowed" / "broker.key").exists()


def test_each_role_uses_only_its_channels() -> None:
    assert may_use("gateway", Channel.FRONTEND) and not may_use("gateway", Channel.BACKEND)
    assert may_use("operator", Channel.FRONTEND) and not may_use("operator", Channel.JOBS)
    assert may_use("worker", Channel.BACKEND) and may_use("worker", Channel.JOBS)
    assert may_use("worker", Channel.FRONTEND)  # dependency calls; the broker drops its
    # control calls but the models listing (WORKER_CONTROL_OPS)
    assert WORKER_CONTROL_OPS == frozenset({"models"})
    assert not any(may_use(None, channel) for channel in Channel)


def test_a_key_directly_in_the_allowed_folder_may_use_every_channel(tmp_path: Path) -> None:
    generate(tmp_path, ["gateway"])
    (tmp_path / "allowed" / "gateway" / "gateway.key").rename(tmp_path / "allowed" / "old.key")
    assert list(allowed_roles(tmp_path / "allowed").values()) == [ANY_ROLE]
    assert all(may_use(ANY_ROLE, channel) for channel in Channel)


def test_role_of_a_key_name() -> None:
    assert [role_of(n) for n in ("gateway-2", "worker", "status", "ops")] == \
        ["gateway", "worker", "operator", "operator"]
