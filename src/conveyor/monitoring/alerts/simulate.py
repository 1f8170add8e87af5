"""A seeded simulation of a day of traffic, to judge the engine's noise.

::

    stream = latency_stream(seed=3, incident_at=600, incident_minutes=20)
    notes = replay(engine, stream, rule="slo_latency_p95_ms")

The stream is one minute of requests at a time: a diurnal request rate, lognormal
latencies (median about 12 ms, p95 about 25 ms), and now and then a minute where a few
percent of the requests stall (a GC pause, a slow neighbour: 80-200 ms). An incident
multiplies every latency by ``incident_factor`` for ``incident_minutes``, with a
lull of ``lull_minutes`` in its middle (an incident flaps). The rule's value at each minute is
the p95 of the last ``window`` minutes, as :meth:`MonitorQuery.system` computes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.monitoring.alerts.engine import Engine, Notification

__all__ = ["Minute", "latency_stream", "replay"]

START = datetime(2026, 12, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Minute:
    at: datetime
    p95_ms: float  # over the rule's window, ending at ``at``
    requests: int
    incident: bool


def latency_stream(
    seed: int,
    *,
    minutes: int = 24 * 60,
    window_minutes: int = 5,
    incident_at: int | None = None,
    incident_minutes: int = 20,
    incident_factor: float = 6.0,
    spike_share: float = 0.03,
    spikes_per_day: int = 40,
    lull_minutes: int = 6,
) -> Iterator[Minute]:
    """Each minute of the day with the p95 latency of the trailing window."""
    import numpy as np

    rng = np.random.default_rng(seed)
    hours = np.arange(minutes) / 60
    rate = 60 * (40 + 30 * np.sin((hours - 9) / 24 * 2 * np.pi))  # 10 to 70 rps
    counts = rng.poisson(rate / 10)  # a tenth of the traffic: the shape, fast
    ends = np.cumsum(counts)
    starts = ends - counts
    latency = rng.lognormal(mean=np.log(12.0), sigma=0.45, size=int(ends[-1]))
    minute_of = np.repeat(np.arange(minutes), counts)
    spiky = np.zeros(minutes, dtype=bool)
    spiky[rng.choice(minutes, size=spikes_per_day, replace=False)] = True
    stalled = spiky[minute_of] & (rng.random(len(latency)) < spike_share)
    latency[stalled] = rng.uniform(80, 200, size=int(stalled.sum()))
    bad = np.zeros(minutes, dtype=bool)
    if incident_at is not None:
        bad[incident_at : incident_at + incident_minutes] = True
        lull = incident_at + incident_minutes // 2
        bad[lull : lull + lull_minutes] = False
        latency[bad[minute_of]] *= incident_factor
    for minute in range(minutes):
        first = starts[max(0, minute - window_minutes + 1)]
        window = latency[first : ends[minute]]
        p95 = _p95(np, window) if len(window) else float("nan")
        yield Minute(START + timedelta(minutes=minute + 1), p95, len(window), bool(bad[minute]))


def _p95(np: Any, values: Any) -> float:
    """``np.percentile(values, 95)`` (linear), by a partial sort: 4x faster."""
    k = 0.95 * (len(values) - 1)
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    part = np.partition(values, [lo, hi])
    return float(part[lo] + (part[hi] - part[lo]) * (k - lo))


def replay(engine: Engine, stream: Iterator[Minute], *, rule: str) -> list[Notification]:
    """Evaluate ``engine`` once a minute on ``stream``'s values for ``rule``; every
    notification it asks for, in order."""
    sent: list[Notification] = []
    for minute in stream:
        value = None if minute.requests == 0 else minute.p95_ms
        sent.extend(engine.evaluate(minute.at, {rule: value}).notifications)
    return sent
