"""Prometheus metrics of the server, labelled by model, version and arm.

With several workers, ``prometheus_client`` needs its multiprocess mode:
:func:`conveyor.serving.server.serve` points ``PROMETHEUS_MULTIPROC_DIR`` at
a fresh folder before the workers start, and ``/metrics`` then aggregates
every worker's files at scrape time.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["ServerMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """The server's metrics in their own registry (tests can run several servers)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._answered: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self.registry = CollectorRegistry()
        labels = ("model", "version", "arm")
        kw: dict[str, Any] = {"registry": self.registry}
        self.requests = Counter(
            "conveyor_requests", "Prediction requests answered.", (*labels, "status"), **kw
        )
        self.latency = Histogram(
            "conveyor_request_seconds",
            "Time to answer a prediction request, decode to encode.",
            labels,
            buckets=_LATENCY_BUCKETS,
            **kw,
        )
        self.batch_size = Histogram(
            "conveyor_batch_rows",
            "Rows per model call.",
            ("model", "version"),
            buckets=_BATCH_BUCKETS,
            **kw,
        )
        self.batch_seconds = Histogram(
            "conveyor_batch_seconds",
            "Model call time per batch.",
            ("model", "version"),
            buckets=_LATENCY_BUCKETS,
            **kw,
        )
        gauge_kw = {**kw, "multiprocess_mode": "livesum"} if self.multiprocess else kw
        self.queue_depth = Gauge(
            "conveyor_queue_rows",
            "Rows waiting in a version's batch queue.",
            ("model", "version"),
            **gauge_kw,
        )
        self.cache = Counter(
            "conveyor_cache_lookups",
            "Prediction cache lookups.",
            ("model", "version", "result"),
            **kw,
        )
        self.shadow = Counter(
            "conveyor_shadow_predictions",
            "Shadow copies answered.",
            ("model", "version", "status"),
            **kw,
        )
        self.errors = Counter(
            "conveyor_errors", "Requests answered with an error, by code.", ("code",), **kw
        )

    def answered(self, model: str, version: str, arm: str) -> tuple[Any, Any]:
        """The (requests ok, latency) series of one model, version and arm, looked up once.

        ``labels()`` costs a lock and a dict lookup per call; a server answers
        thousands of requests a second on a handful of label sets.
        """
        key = (model, version, arm)
        found = self._answered.get(key)
        if found is None:
            found = (
                self.requests.labels(model, version, arm, "ok"),
                self.latency.labels(model, version, arm),
            )
            self._answered[key] = found
        return found

    def on_batch(self, model: str, number: int, size: int, seconds: float) -> None:
        version = str(number)
        self.batch_size.labels(model, version).observe(size)
        self.batch_seconds.labels(model, version).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text (aggregated over workers in multiprocess mode)."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
