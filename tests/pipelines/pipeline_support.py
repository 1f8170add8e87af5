"""Shared by the pipeline tests: open real backends, read back what was written."""

from __future__ import annotations

from typing import Any

from conveyor.events.log import EventLog
from conveyor.store.database import MetadataStore


class Backends:
    """An open metadata store and event log (both on one backend), and their URLs."""

    def __init__(self, store_url: str, events_url: str) -> None:
        self.store_url = store_url
        self.events_url = events_url
        self.store = MetadataStore.from_url(store_url)
        self.events = EventLog.from_url(events_url, flush_interval=0.01)

    def close(self) -> None:
        self.events.close()
        self.store.close()

    def kinds(self, pipeline: str) -> list[str]:
        """Kinds of every event written about ``pipeline``, in order."""
        self.events.flush()
        return [e.kind for e in self.events.iter(subject=pipeline)]

    def payloads(self, pipeline: str, kind: str) -> list[dict[str, Any]]:
        self.events.flush()
        return [dict(e.payload) for e in self.events.iter(subject=pipeline, kind=kind)]
