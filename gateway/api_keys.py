"""API keys: who may call the gateway, and which services each key may use (pure).

A keys file (``gateway.api_keys_file``, YAML) lists one entry per key, by the
SHA-256 of the key so that the file holds no secret::

    keys:
      - name: team-a                       # shown in logs, never the key
        sha256: 9f86d081884c7d65...        # zeroserve keys api prints key and entry
        services: [mlp, gpu_sim]           # or ["*"] for every service
        role: admin                        # optional: sees every owner's jobs (default: user)

A job belongs to the *name* of the key that submitted it: rotating a key (a new
``sha256`` under the same ``name``) keeps its jobs; another name never sees them,
unless its role is ``admin``.

A request carries its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``
(gRPC: the same names in lower case, as metadata).
"""
from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

ANY_SERVICE = "*"
ROLES = ("user", "admin")


class KeysFileError(ValueError):
    """A keys file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Identity:
    """A caller whose key matched: its name, the services it may use, and whether it is an
    ``admin`` (sees every owner's jobs; a ``user`` sees only its own)."""

    name: str
    services: frozenset[str]
    admin: bool = False

    def allows(self, service: str) -> bool:
        return ANY_SERVICE in self.services or service in self.services


def digest(key: str) -> str:
    """The hex SHA-256 of a key, as the keys file stores it."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe)."""
    return "zs_" + secrets.token_urlsafe(32)


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The key a request carries (``headers`` with lower-case names), or None."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


class ApiKeys:
    """The keys a gateway accepts."""

    def __init__(self, identities: Mapping[str, Identity]) -> None:
        self._by_digest = dict(identities)

    @classmethod
    def load(cls, path: str | Path) -> ApiKeys:
        """Read a keys file; :class:`KeysFileError` names the entry that is wrong."""
        try:
            doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise KeysFileError(f"{path}: {exc}") from None
        entries = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(entries, list) or not entries:
            raise KeysFileError(f"{path}: expected a non-empty 'keys' list")
        identities: dict[str, Identity] = {}
        for index, entry in enumerate(entries):
            where = f"{path}: keys[{index}]"
            if not isinstance(entry, dict):
                raise KeysFileError(f"{where} must be a mapping")
            sha = str(entry.get("sha256", "")).lower()
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise KeysFileError(f"{where}: 'sha256' must be 64 hex digits")
            services = entry.get("services", [])
            if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
                raise KeysFileError(f"{where}: 'services' must be a list of names or ['*']")
            role = entry.get("role", "user")
            if role not in ROLES:
                raise KeysFileError(f"{where}: 'role' must be one of {', '.join(ROLES)}")
            identities[sha] = Identity(str(entry.get("name", f"key-{index}")),
                                       frozenset(services), admin=role == "admin")
        return cls(identities)

    def authenticate(self, key: str | None) -> Identity | None:
        """The identity of ``key``, or None when it is missing or unknown."""
        return self._by_digest.get(digest(key)) if key else None
