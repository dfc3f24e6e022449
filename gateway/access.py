"""Who may call what on a gateway: API-key checks shared by the HTTP and gRPC front ends."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.api_keys import ApiKeys, Identity, key_from_headers
from gateway.broker_link import BrokerLink
from gateway.errors import RequestFailed
from zeroserve.wire.descriptions import ServiceDescription
from zeroserve.wire.envelope import Status


@dataclass(frozen=True)
class Access:
    """API keys (None: every caller may use every service) and the HTTP paths open to all."""

    keys: ApiKeys | None = None
    public_paths: frozenset[str] = field(default_factory=frozenset)

    @property
    def enforced(self) -> bool:
        return self.keys is not None

    def identify(self, headers: Mapping[str, str]) -> Identity | None:
        """The caller of a request (headers with case-insensitive or lower-case names);
        None when keys are off. 401 when keys are on and the request has no valid key."""
        if self.keys is None:
            return None
        identity = self.keys.authenticate(key_from_headers(headers))
        if identity is None:
            raise RequestFailed(Status.UNAUTHORIZED, "a valid API key is required: send "
                                "'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        return identity

    def check(self, identity: Identity | None, service: str) -> None:
        """403 unless ``identity`` may use ``service`` (anyone may when keys are off)."""
        if identity is not None and not identity.allows(service):
            raise RequestFailed(Status.FORBIDDEN,
                                f"API key '{identity.name}' may not use service '{service}'")

    def visible(self, identity: Identity | None, services: Iterable[str]) -> list[str]:
        """The services ``identity`` may see (all of them when keys are off)."""
        return [s for s in services if identity is None or identity.allows(s)]

    async def visible_services(self, link: BrokerLink, identity: Identity | None
                               ) -> dict[str, ServiceDescription]:
        """The broker's services (from its MODELS answer, asked again when older than a
        second) that ``identity`` may see, in the answer's order."""
        await link.refresh_if_stale(1.0)
        known = link.descriptions
        return {s: known[s] for s in self.visible(identity, known)}


def load_access(keys_file: str, public_paths: Iterable[str]) -> Access:
    """The gateway's access rules from its settings (``gateway.api_keys_file``, empty: off)."""
    return Access(ApiKeys.load(keys_file) if keys_file else None, frozenset(public_paths))
