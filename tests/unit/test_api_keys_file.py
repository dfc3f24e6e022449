"""API keys: the keys file, matching a key, and which services it opens."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.access import Access
from gateway.api_keys import ApiKeys, KeysFileError, digest, key_from_headers, new_key
from gateway.errors import RequestFailed
from zeroserve.wire.envelope import Status


def _keys_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    return path


def test_a_key_opens_its_services_only(tmp_path: Path) -> None:
    key_a, key_all = new_key(), new_key()
    keys = ApiKeys.load(_keys_file(tmp_path, f"""
keys:
  - {{name: team-a, sha256: {digest(key_a)}, services: [mlp]}}
  - {{name: ops, sha256: {digest(key_all).upper()}, services: ["*"]}}
"""))
    team = keys.authenticate(key_a)
    assert team is not None and team.name == "team-a"
    assert team.allows("mlp") and not team.allows("gpu_sim")
    ops = keys.authenticate(key_all)
    assert ops is not None and ops.allows("anything")
    assert keys.authenticate("zs_wrong") is None and keys.authenticate(None) is None


@pytest.mark.parametrize("headers, key", [
    ({"authorization": "Bearer abc"}, "abc"),
    ({"authorization": "bearer  abc "}, "abc"),
    ({"x-api-key": "abc"}, "abc"),
    ({"authorization": "Basic abc"}, None),
    ({}, None),
])
def test_key_from_headers(headers: dict, key: str | None) -> None:
    assert key_from_headers(headers) == key


@pytest.mark.parametrize("text, message", [
    ("keys: []", "non-empty 'keys'"),
    ("keys: [{sha256: abc}]", "64 hex digits"),
    (f"keys: [{{sha256: {'a' * 64}, services: mlp}}]", "list of names"),
    ("[1, 2", "keys.yaml"),
])
def test_bad_keys_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(KeysFileError, match=message):
        ApiKeys.load(_keys_file(tmp_path, text))


def test_access_without_keys_lets_everyone_in() -> None:
    access = Access()
    assert access.identify({}) is None
    access.check(None, "mlp")
    assert access.visible(None, ["a", "b"]) == ["a", "b"]


def test_access_with_keys_refuses_with_401_and_403(tmp_path: Path) -> None:
    key = new_key()
    access = Access(ApiKeys.load(_keys_file(
        tmp_path, f"keys: [{{name: a, sha256: {digest(key)}, services: [mlp]}}]")))
    with pytest.raises(RequestFailed) as info:
        access.identify({})
    assert info.value.status is Status.UNAUTHORIZED
    identity = access.identify({"authorization": f"Bearer {key}"})
    with pytest.raises(RequestFailed) as info:
        access.check(identity, "other")
    assert info.value.status is Status.FORBIDDEN and "'a'" in str(info.value)
    assert access.visible(identity, ["mlp", "other"]) == ["mlp"]
