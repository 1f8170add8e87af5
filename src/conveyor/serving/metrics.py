"""Prometheus metrics of the model server, labelled by model, version and arm.

They live in the app's registry (:class:`conveyor.web.metrics.WebMetrics`),
beside the request pipeline's own, so ``GET /metrics`` shows both. With
several workers, ``prometheus_client`` needs its multiprocess mode:
:func:`conveyor.serving.server.serve` points ``PROMETHEUS_MULTIPROC_DIR`` at
a fresh folder before the workers start, and ``/metrics`` then aggregates
every worker's files at scrape time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from conveyor.web.metrics import LATENCY_BUCKETS

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["ServerMetrics", "latency_bounds"]

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """The model server's series, in ``registry`` (one per app: tests run several servers)."""

    def __init__(self, registry: CollectorRegistry, latency_bounds: Iterable[float] = ()) -> None:
        """``latency_bounds`` (seconds) are added to the latency histogram's buckets: the
        thresholds of latency SLOs and alerts, so Prometheus' quantile estimate is on the
        right side of each exactly (:func:`latency_bounds`)."""
        from prometheus_client import Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._answered: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        #: Model calls and their rows since start (the monitoring sampler reads them).
        self.batches = 0
        self.batch_rows = 0
        #: (model, version) -> [batches, rows] since start.
        self.batch_counts: dict[tuple[str, int], list[int]] = {}
        self.registry = registry
        labels = ("model", "version", "arm")
        kw: dict[str, Any] = {"registry": self.registry}
        self.requests = Counter(
            "conveyor_requests", "Prediction requests answered.", (*labels, "status"), **kw
        )
        self.shed = Counter(
            "conveyor_shed_requests",
            "Prediction requests refused because a batch queue was full (503 overloaded); "
            "conveyor_requests counts them too, with status 503.",
            labels,
            **kw,
        )
        buckets = tuple(sorted({*LATENCY_BUCKETS, *(b for b in latency_bounds if b > 0)}))
        self.latency = Histogram(
            "conveyor_request_seconds",
            "Time to answer a prediction request, decode to encode.",
            labels,
            buckets=buckets,
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
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        gauge_kw = {**kw, "multiprocess_mode": "livesum"} if self.multiprocess else kw
        self.queue_depth = Gauge(
            "conveyor_queue_rows",
            "Rows waiting in a version's batch queue.",
            ("model", "version"),
            **gauge_kw,
        )
        self.degraded = Gauge(
            "conveyor_route_degraded",
            "1 while this worker cannot load its model's live route revision (it serves the "
            "revision it had, or answers 503 model_unavailable).",
            ("model",),
            **({**kw, "multiprocess_mode": "max"} if self.multiprocess else kw),
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
        self.shadow_diff = Histogram(
            "conveyor_shadow_abs_diff",
            "Largest absolute difference between a shadow's numbers and the answer given, "
            "per shadow copy.",
            ("model", "version"),
            buckets=(0.0, 1e-9, 1e-6, 1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0, 1e4, float("inf")),
            **kw,
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

    def failed(self, model: str, version: str, arm: str, status: int, code: str) -> None:
        """A prediction request answered with an error: ``conveyor_requests`` with its HTTP
        status as ``status`` (``ok`` for answers), and ``conveyor_shed_requests`` for shed
        load. Version and arm are empty when it failed before one was chosen."""
        self.requests.labels(model, version, arm, str(status)).inc()
        if code == "overloaded":
            self.shed.labels(model, version, arm).inc()

    def on_batch(self, model: str, number: int, size: int, seconds: float) -> None:
        # Per batch, not per request: what the monitoring sampler reads (serving.sample).
        self.batches += 1
        self.batch_rows += size
        counted = self.batch_counts.get((model, number))
        if counted is None:
            self.batch_counts[(model, number)] = [1, size]
        else:
            counted[0] += 1
            counted[1] += size
        version = str(number)
        self.batch_size.labels(model, version).observe(size)
        self.batch_seconds.labels(model, version).observe(seconds)


def latency_bounds(spec: Any) -> tuple[float, ...]:
    """The latency thresholds (seconds) of ``spec``: ``slos.latency_p95_ms`` and the
    thresholds of ``monitoring.alerts.rules`` on ``latency_*`` metrics (read as data: the
    serving capability does not import monitoring). Each becomes a bucket bound of
    ``conveyor_request_seconds``, so a quantile Prometheus estimates is above a threshold
    exactly when the requests' share under it says so."""
    found: set[float] = set()
    slos = getattr(spec, "slos", None)
    p95 = getattr(slos, "latency_p95_ms", None)
    if isinstance(p95, int | float) and p95 > 0:
        found.add(float(p95) / 1000)
    alerts = getattr(getattr(spec, "monitoring", None), "alerts", None)
    for rule in getattr(alerts, "rules", None) or ():
        metric = str(getattr(rule, "metric", ""))
        threshold = getattr(rule, "threshold", None)
        if metric.startswith("latency_") and isinstance(threshold, int | float) and threshold > 0:
            found.add(float(threshold) / 1000)
    return tuple(sorted(found))
