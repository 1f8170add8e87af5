"""The serving process samples itself into the event log: CPU, memory, queues, shed load.

Every worker of a server built by :func:`conveyor.web.app.build_app` (``conveyor
serve``, one per process) records a ``serving.sample`` event every
``monitoring.system.sample_interval_s`` (10 s by default; 0 turns it off)::

    {"pid": 4121, "host": "web-1", "interval_s": 10.0, "uptime_s": 3600.2,
     "cpu_percent": 37.5, "rss_mib": 412.3, "threads": 9,
     "queue_depth": 12, "batches": 931, "batch_rows": 1862, "shed": 0,
     "failed": {"invalid_input": 3},
     "versions": [{"model": "fraud", "version": "3", "queue_rows": 12, "batches": 931,
                   "batch_rows": 1862}]}

``cpu_percent`` is the process's CPU time over the interval (100 = one core busy),
``queue_depth`` the rows waiting in the batch queues at that moment, ``batches`` and
``batch_rows`` the model calls and their rows during the interval (``versions``: the
same per loaded model version), ``shed`` the requests refused because a queue was full
(``overloaded``) and ``failed`` every failed prediction request by error code, during
the interval. Sampling costs one psutil call and a walk over the loaded versions every
interval, nothing per request; the event is telemetry (never waited for).

Failed requests themselves are ``prediction.failed`` events, written by the model
server's routes (:meth:`conveyor.serving.app.Server.failed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.monitoring.system_events import SERVING_SAMPLE

if TYPE_CHECKING:
    from types import SimpleNamespace

    from conveyor.project import Project

__all__ = ["SERVING_SAMPLE", "Sampler", "SystemSpec", "system_of"]

log = logging.getLogger("conveyor.monitoring")


class SystemSpec(BaseModel):
    """How the serving processes sample themselves (``monitoring.system``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_interval_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="Seconds between two serving.sample events of a server worker (CPU, "
        "memory, queue depth, shed load); 0 turns sampling off.",
    )


def system_of(project: Project) -> SystemSpec:
    """``monitoring.system`` (defaults when the spec has none)."""
    from conveyor.monitoring.settings import monitoring_of

    found = getattr(monitoring_of(project.spec), "system", None)
    return found if isinstance(found, SystemSpec) else SystemSpec()


class Sampler:
    """Samples this process every ``interval_s`` into ``serving.sample`` events.

    ``state`` is the app's shared state: when the model server put its
    :class:`~conveyor.serving.app.Server` there (``state.server``), its batch queues,
    batch counters and failures are sampled too (read by attribute: monitoring does not
    import serving).
    """

    def __init__(self, project: Project, state: SimpleNamespace | None, interval_s: float) -> None:
        self.project = project
        self.state = state
        self.interval_s = interval_s
        self.samples = 0
        self._task: asyncio.Task[None] | None = None
        self._process: Any = None
        self._started = time.monotonic()
        self._host = socket.gethostname()
        self._last: dict[str, Any] = {}

    async def start(self) -> None:
        if self.interval_s <= 0 or self._task is not None:
            return
        try:
            import psutil  # type: ignore[import-untyped]
        except ImportError:  # an install that predates the dependency: serve, unsampled
            log.warning("psutil is not installed: this worker records no serving.sample")
            return

        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # the first call only starts the count
        self._last = self._counters()
        self._task = asyncio.create_task(self._loop(), name="conveyor-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.sample()
            except Exception:  # a failed sample is logged; serving goes on
                log.exception("sampling the serving process failed")

    def sample(self) -> dict[str, Any]:
        """Record one sample now and return its payload."""
        if self._process is None:
            import psutil

            self._process = psutil.Process(os.getpid())
        process = self._process
        with process.oneshot():
            cpu = process.cpu_percent(None)
            rss = process.memory_info().rss
            threads = process.num_threads()
        counters = self._counters()
        last, self._last = self._last, counters
        before = last.get("failed", {})
        failed = {
            code: n - before.get(code, 0)
            for code, n in counters["failed"].items()
            if n - before.get(code, 0)
        }
        versions = []
        for key, now in counters["versions"].items():
            then = last.get("versions", {}).get(key, {})
            versions.append(
                {
                    **now,
                    "batches": now["batches"] - then.get("batches", 0),
                    "batch_rows": now["batch_rows"] - then.get("batch_rows", 0),
                }
            )
        payload = {
            "pid": os.getpid(),
            "host": self._host,
            "interval_s": self.interval_s,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "cpu_percent": round(float(cpu), 2),
            "rss_mib": round(rss / 2**20, 2),
            "threads": int(threads),
            "queue_depth": sum(v["queue_rows"] for v in versions),
            "versions": versions,
            "batches": counters["batches"] - last.get("batches", 0),
            "batch_rows": counters["batch_rows"] - last.get("batch_rows", 0),
            "shed": failed.get("overloaded", 0),
            "failed": failed,
        }
        self.project.events.record(SERVING_SAMPLE, payload=payload)
        self.samples += 1
        return payload

    def _counters(self) -> dict[str, Any]:
        """What the model server of this process counts (nothing without one): per loaded
        version its queue now and its batches since start."""
        server = getattr(self.state, "server", None) if self.state is not None else None
        if server is None:
            return {"versions": {}, "batches": 0, "batch_rows": 0, "failed": {}}
        metrics = server.metrics
        counts = getattr(metrics, "batch_counts", {})
        versions: dict[tuple[str, int], dict[str, Any]] = {}
        for served in list(getattr(server.pool, "served", ())):
            version = served.version
            batches, rows = counts.get((version.model, version.number), (0, 0))
            versions[(version.model, version.number)] = {
                "model": version.model,
                "version": str(version.number),
                "queue_rows": int(served.batcher.queue_depth),
                "batches": int(batches),
                "batch_rows": int(rows),
            }
        return {
            "versions": versions,
            "batches": int(getattr(metrics, "batches", 0)),
            "batch_rows": int(getattr(metrics, "batch_rows", 0)),
            "failed": dict(getattr(server, "failures", {})),
        }
