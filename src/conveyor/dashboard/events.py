"""The event kind the dashboard writes (declared in its capability): every login, kept or
refused, is on the audit trail like a key's other uses."""

from __future__ import annotations

from conveyor.capability import EventKind
from conveyor.events.catalogue import OPTIONAL_STR

__all__ = ["DASHBOARD_EVENTS", "DASHBOARD_LOGIN"]

DASHBOARD_LOGIN = EventKind(
    "dashboard.login",
    "audit",
    {
        "ok": bool,  # the key was valid and may view: the browser now holds it in its cookie
        "reason": OPTIONAL_STR,  # why a login was refused (missing, unknown, revoked, role...)
    },
    "someone logged in to the dashboard with an API key (actor: the key), or was refused",
)

DASHBOARD_EVENTS = (DASHBOARD_LOGIN,)
