"""A caller's request for the stages that answered it (``docs/composition.md``): which
services and workers ran, how long each waited in its queue and ran, and what each called.

Asked for with the ``X-Zeroserve-Stages: 1`` header (REST) or ``zeroserve-stages: 1``
metadata (gRPC ``Serving.Call``); answered in the same header or trailing metadata as a JSON
list, with the request id (``X-Request-Id`` / ``zeroserve-request-id``).
"""
from __future__ import annotations

import json

STAGES_HEADER = "X-Zeroserve-Stages"
STAGES_METADATA = "zeroserve-stages"
REQUEST_ID_METADATA = "zeroserve-request-id"

_YES = frozenset({"1", "true", "yes", "on"})


def wants_stages(value: str | None) -> bool:
    """Whether a header or metadata value asks for the stages."""
    return value is not None and value.strip().lower() in _YES


def stages_json(stages: list) -> str:
    """The stages as one line of JSON (a header value)."""
    return json.dumps(stages, separators=(",", ":"), default=str)
