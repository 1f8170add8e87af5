"""Prometheus metrics every server shares: requests by route and status, latency, errors.

One :class:`~prometheus_client.CollectorRegistry` per app, shared by the
pipeline and by what capabilities measure (the model server's predictions,
batches, cache), so ``GET /metrics`` shows all of it. With several worker
processes, ``prometheus_client`` runs in its multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by ``conveyor serve``) and a scrape
aggregates every worker's files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["LATENCY_BUCKETS", "WebMetrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class WebMetrics:
    """The registry of one app and the pipeline's own series."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "conveyor_http_requests",
            "HTTP requests answered, by route and status.",
            ("route", "status"),
            registry=self.registry,
        )
        self._seconds = Histogram(
            "conveyor_http_request_seconds",
            "Time from the request's arrival to its answer, by route.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._errors = Counter(
            "conveyor_errors",
            "Requests answered with an error, by code.",
            ("code",),
            registry=self.registry,
        )
        from prometheus_client import Gauge

        gauge_kw: dict[str, Any] = {"registry": self.registry}
        if self.multiprocess:
            gauge_kw["multiprocess_mode"] = "livesum"
        self._events = Gauge(
            "conveyor_events",
            "The event log's write path in this process: events unwritten (in memory), "
            "shed (telemetry dropped: no room, no spill), spilled and replayed (through "
            "local segments), commits (transactions), and with events.durability: "
            "acknowledged, acknowledged_waits (answers that waited for a commit) and "
            "acknowledged_groups (the commits they waited for), counted since start.",
            ("state",),
            **gauge_kw,
        )
        # labels() takes a lock and a lookup; a server answers thousands of requests a
        # second on a handful of label sets, so each child is looked up once.
        self._answered: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._error_children: dict[str, Any] = {}
        self._before_scrape: list[Callable[[], None]] = []
        if not self.multiprocess:  # multiprocess: every worker's, added at scrape time
            self.registry.register(_Processes(None))

    def answered(self, route: str, status: int, seconds: float) -> None:
        children = self._answered.get((route, status))
        if children is None:
            children = (
                self._requests.labels(route, str(status)),
                self._seconds.labels(route),
            )
            self._answered[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def error(self, code: str) -> None:
        child = self._error_children.get(code)
        if child is None:
            child = self._error_children[code] = self._errors.labels(code)
        child.inc()

    def event_log(self, stats: dict[str, int]) -> None:
        """Set the event-log gauges from :meth:`conveyor.events.log.EventLog.stats`."""
        for state, value in stats.items():
            self._events.labels(state).set(value)

    def before_scrape(self, update: Callable[[], None]) -> None:
        """Run ``update`` before each scrape (to set gauges such as queue depths)."""
        self._before_scrape.append(update)

    def render(self) -> tuple[bytes, str]:
        """The exposition text (aggregated over workers in multiprocess mode)."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        for update in self._before_scrape:
            update()
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(_Processes(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Processes:
    """CPU time and resident memory of the serving processes, read (psutil) at scrape time:
    ``conveyor_process_cpu_seconds_total`` and ``conveyor_process_resident_memory_bytes``
    by ``pid``. Nothing is measured between scrapes.

    With several workers (``folder``: the multiprocess folder), the workers are the
    processes that wrote a file there and share this worker's parent; a worker that died
    is not listed, whatever files it left.
    """

    def __init__(self, folder: str | None) -> None:
        self.folder = folder

    def _pids(self) -> list[int]:
        me = os.getpid()
        if self.folder is None:
            return [me]
        found = {me}
        try:
            names = os.listdir(self.folder)
        except OSError:
            return [me]
        for name in names:
            stem = name.rsplit(".", 1)[0]
            tail = stem.rsplit("_", 1)[-1]
            if tail.isdigit():
                found.add(int(tail))
        return sorted(found)

    def collect(self) -> Any:
        import psutil  # type: ignore[import-untyped]
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        cpu = CounterMetricFamily(
            "conveyor_process_cpu_seconds",
            "CPU time (user + system) of a serving process, seconds.",
            labels=["pid"],
        )
        rss = GaugeMetricFamily(
            "conveyor_process_resident_memory_bytes",
            "Resident memory of a serving process, bytes.",
            labels=["pid"],
        )
        me, parent = os.getpid(), os.getppid()
        for pid in self._pids():
            try:
                process = psutil.Process(pid)
                if pid != me and process.ppid() != parent:
                    continue  # a pid reused by another program since that worker died
                times = process.cpu_times()
                memory = process.memory_info()
            except psutil.Error:
                continue  # gone since its files were written
            cpu.add_metric([str(pid)], times.user + times.system)
            rss.add_metric([str(pid)], memory.rss)
        yield cpu
        yield rss
