"""The metadata store: runs, reports and every mutable record, in SQLite or PostgreSQL.

The public names load on first use, so importing a helper such as
``conveyor.store.paging`` does not pull in the ORM.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
