"""The ``serving.sample`` event kind, apart from the sampler (:mod:`.system`) so that the
catalogue loads it without asyncio or pydantic (``conveyor --help`` reads the catalogue)."""

from __future__ import annotations

from conveyor.capability import EventKind
from conveyor.events.catalogue import NUMBER

__all__ = ["SERVING_SAMPLE"]

SERVING_SAMPLE = EventKind(
    "serving.sample",
    "telemetry",
    {
        "pid": int,
        "host": str,
        "interval_s": NUMBER,
        "uptime_s": NUMBER,
        "cpu_percent": NUMBER,
        "rss_mib": NUMBER,
        "threads": int,
        "queue_depth": int,
        "versions": list,
        "batches": int,
        "batch_rows": int,
        "shed": int,
        "failed": dict,
    },
    "a server worker sampled itself: CPU and memory (psutil), rows waiting in its batch "
    "queues, and the batches, shed requests and failures of the interval",
)
