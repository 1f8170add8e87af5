"""The event log: one append-only schema for everything that happens.

``Event`` (the schema) imports no database driver, so code that only builds
events stays light; ``EventLog`` (which needs SQLAlchemy) is imported on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.events.schema import Event, new_event_id

if TYPE_CHECKING:
    from conveyor.events.log import EventLog

__all__ = ["Event", "EventLog", "new_event_id"]


def __getattr__(name: str) -> Any:
    if name == "EventLog":
        from conveyor.events.log import EventLog

        return EventLog
    raise AttributeError(f"module 'conveyor.events' has no attribute {name!r}")
