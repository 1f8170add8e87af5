"""Governance: who may do what, and what they did.

- :mod:`~conveyor.governance.roles`: roles and the actions capabilities declare;
- :mod:`~conveyor.governance.keys`: API keys, hashed, verified with a cache;
- :mod:`~conveyor.governance.access`: the one rule the CLI and every server apply;
- :mod:`~conveyor.governance.ratelimit`: token buckets per key (memory, Redis), a seam.

The public names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor._lazy import lazy_exports

if TYPE_CHECKING:
    from conveyor.governance.access import Access, Caller, actor_of
    from conveyor.governance.keys import ApiKey, ApiKeys
    from conveyor.governance.ratelimit import RATELIMIT, RateLimiter
    from conveyor.governance.roles import ROLES, Role, actions, allows, require

__all__ = [
    "RATELIMIT",
    "ROLES",
    "Access",
    "ApiKey",
    "ApiKeys",
    "Caller",
    "RateLimiter",
    "Role",
    "actions",
    "actor_of",
    "allows",
    "require",
]

_HOMES = {
    "Access": ".access",
    "Caller": ".access",
    "actor_of": ".access",
    "ApiKey": ".keys",
    "ApiKeys": ".keys",
    "RATELIMIT": ".ratelimit",
    "RateLimiter": ".ratelimit",
    "ROLES": ".roles",
    "Role": ".roles",
    "actions": ".roles",
    "allows": ".roles",
    "require": ".roles",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
