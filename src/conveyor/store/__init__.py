"""The metadata store: runs, reports and every mutable record, in SQLite or PostgreSQL.

The public names load on first use, so importing a helper such as
``conveyor.store.paging`` does not pull in the ORM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor._lazy import lazy_exports

if TYPE_CHECKING:
    from conveyor.store.database import MetadataStore
    from conveyor.store.paging import Page
    from conveyor.store.runs import Run, RunRepository

__all__ = ["MetadataStore", "Page", "Run", "RunRepository"]

_HOMES = {
    "MetadataStore": "conveyor.store.database",
    "Page": "conveyor.store.paging",
    "Run": "conveyor.store.runs",
    "RunRepository": "conveyor.store.runs",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
