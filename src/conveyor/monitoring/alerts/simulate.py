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
    spike_minutes = set(rng.choice(minutes, size=spikes_per_day, replace=False).tolist())
    lull = None if incident_at is None else incident_at + incident_minutes // 2
    trail: list[Any] = []
    for minute in range(minutes):
        hour = minute / 60
        rate = 60 * (40 + 30 * np.sin((hour - 9) / 24 * 2 * np.pi))  # 10 to 70 rps
        n = int(rng.poisson(rate / 10))  # a tenth of the traffic: the shape, fast
        latency = rng.lognormal(mean=np.log(12.0), sigma=0.45, size=n)
        if minute in spike_minutes:
            stalled = rng.random(n) < spike_share
            latency[stalled] = rng.uniform(80, 200, size=int(stalled.sum()))
        incident = (
            incident_at is not None
            and incident_at <= minute < incident_at + incident_minutes
            and not (lull is not None and lull <= minute < lull + lull_minutes)
        )
        if incident:
            latency = latency * incident_factor
        trail.append(latency)
        if len(trail) > window_minutes:
            trail.pop(0)
        joined = np.concatenate(trail)
        p95 = float(np.percentile(joined, 95)) if len(joined) else float("nan")
        yield Minute(START + timedelta(minutes=minute + 1), p95, len(joined), incident)


def replay(engine: Engine, stream: Iterator[Minute], *, rule: str) -> list[Notification]:
    """Evaluate ``engine`` once a minute on ``stream``'s values for ``rule``; every
    notification it asks for, in order."""
    sent: list[Notification] = []
    for minute in stream:
        value = None if minute.requests == 0 else minute.p95_ms
        sent.extend(engine.evaluate(minute.at, {rule: value}).notifications)
    return sent
