"""The event kinds governance writes (declared in its capability, see
:mod:`conveyor.events.catalogue`): API keys created and revoked, both audit.

The payload describes the key as stored (never its secret).
"""

from __future__ import annotations

from conveyor.capability import EventKind
from conveyor.events.catalogue import OPTIONAL_NUMBER, OPTIONAL_STR

__all__ = ["AUTH_KEY_CREATED", "AUTH_KEY_REVOKED", "GOVERNANCE_EVENTS"]

_KEY = {
    "key_id": str,
    "name": str,
    "role": str,
    "prefix": str,
    "rate_per_second": OPTIONAL_NUMBER,
    "burst": (int, type(None)),
    "expires_at": OPTIONAL_STR,
}

AUTH_KEY_CREATED = EventKind(
    "auth.key_created", "audit", _KEY, "an API key was created with a role and limits"
)
AUTH_KEY_REVOKED = EventKind("auth.key_revoked", "audit", _KEY, "an API key was revoked")

#: Every kind the governance capability declares.
GOVERNANCE_EVENTS: tuple[EventKind, ...] = (AUTH_KEY_CREATED, AUTH_KEY_REVOKED)
