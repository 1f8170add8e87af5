"""The audit trail: who changed what, read from the one event log.

Every kind the catalogue calls ``audit`` (a key created or revoked, an alias
moved, a route set or rolled back, data forgotten, a key rotated...) is
committed before the action returns, so the trail is complete::

    page = audit_trail(project.events, by="key:ci-deployer", since=last_week)
    for event in page.items: ...

``conveyor audit`` and ``GET /v1/audit`` show it (action ``audit.read``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.events.log import EventLog
    from conveyor.events.schema import Event
    from conveyor.store.paging import Page

__all__ = ["audit_kinds", "audit_trail"]


def audit_kinds() -> list[str]:
    """Every catalogued kind whose durability is ``audit``, sorted."""
    from conveyor.events.catalogue import kinds

    return sorted(name for name, kind in kinds().items() if kind.durability == "audit")


def audit_trail(
    events: EventLog,
    *,
    by: str | None = None,
    subject: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> Page[Event]:
    """One page of audit events, newest first; ``by`` keeps what one caller did
    (``key:NAME``), ``kind`` narrows to one audit kind."""
    from conveyor.errors import InvalidInputError

    audited = audit_kinds()
    if kind is not None and kind not in audited:
        raise InvalidInputError(
            f"{kind!r} is not an audit kind; audit kinds: {', '.join(audited)}", field="kind"
        )
    return events.query(
        kind=[kind] if kind is not None else audited,
        actor=by,
        subject=subject,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
        descending=True,
    )
