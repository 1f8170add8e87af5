"""Event log: what ``emit`` costs the caller, and what the writer sustains.

    .venv/bin/python benchmarks/event_log.py              # SQLite and PostgreSQL
    .venv/bin/python benchmarks/event_log.py --quick      # small sizes
    .venv/bin/python benchmarks/event_log.py --backend sqlite

Three measurements per backend, each on a fresh database (a temp file; a
fresh PostgreSQL database, dropped afterwards), with a prediction-shaped
event (model, version, request and trace ids, a small payload):

- **emit cost**: non-durable ``emit`` timed in batches of 1,000 calls;
  median, p90 and best of the per-call means. Twice: with the writer asleep
  (the caller's own cost: validation, JSON, id, the append), and with the
  writer committing meanwhile (as in a server: the caller then also waits
  for the GIL while the writer's Python code runs).
- **sustained throughput**: one thread emits as fast as it can, then
  ``flush()``; events/s from the first emit until everything is committed.
  When the writer is slower than the producer the bounded buffer makes the
  producer wait, so this is the committed rate.
- **durable latency**: ``emit(durable=True)`` one at a time; median and p99.

The measurement functions take a URL and return plain dicts, so another
benchmark (a peer comparison) can import and reuse them. Nothing here is
asserted; results go to ``results/event_log.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

from conveyor.events import EventLog

PEERS: tuple[str, ...] = ()
BACKENDS = ("sqlite", "postgresql")
Log = Callable[[str], None]

PAYLOAD: dict[str, Any] = {
    "model": "fraud",
    "latency_ms": 1.93,
    "input_digest": "9f2c4e1a0b7d3c5e8f6a2b4c9d0e1f3a",
    "output": [0.03, 0.97],
    "route": "champion",
}


def _emit_one(log: EventLog, i: int, durable: bool = False) -> None:
    log.emit(
        "prediction",
        subject="fraud",
        subject_version="3",
        payload=PAYLOAD,
        request_id=f"req-{i}",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        durable=durable,
    )


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_emit_cost(
    url: str, *, batches: int = 200, batch: int = 1_000, writer_idle: bool = False
) -> dict[str, Any]:
    """Microseconds per non-durable ``emit``, from per-batch means.

    ``writer_idle=True`` keeps the background writer asleep until the clock
    stops (one batch as large as the whole run, committed by ``close``): the
    caller's own cost. Otherwise the writer commits while the caller emits,
    as in a server, and the time includes waiting for the GIL it holds.
    """
    total = batches * batch + 1
    options = {"batch_size": total, "max_buffer": total, "flush_interval": 3600.0}
    per_call: list[float] = []
    with EventLog.from_url(url, **(options if writer_idle else {})) as log:
        _emit_one(log, -1)  # start the writer thread outside the clock
        if not writer_idle:
            log.flush()
        for b in range(batches):
            start = time.perf_counter()
            for i in range(batch):
                _emit_one(log, b * batch + i)
            per_call.append((time.perf_counter() - start) / batch * 1e6)
        log.flush()
        stored = log.count()
    return {
        "calls": batches * batch,
        "stored": stored,
        "writer_idle": writer_idle,
        "us_median": round(statistics.median(per_call), 2),
        "us_p90": round(_quantile(per_call, 0.9), 2),
        "us_best": round(min(per_call), 2),
    }


def measure_throughput(url: str, *, events: int = 200_000) -> dict[str, Any]:
    """Committed events per second with one producer emitting flat out."""
    with EventLog.from_url(url) as log:
        start = time.perf_counter()
        for i in range(events):
            _emit_one(log, i)
        emitted = time.perf_counter() - start
        log.flush()
        committed = time.perf_counter() - start
        stored = log.count()
    return {
        "events": events,
        "stored": stored,
        "emit_phase_s": round(emitted, 3),
        "committed_s": round(committed, 3),
        "events_per_s": round(events / committed),
    }


def measure_durable_latency(url: str, *, count: int = 2_000) -> dict[str, Any]:
    """Milliseconds per ``emit(durable=True)``, one caller, one at a time."""
    latencies: list[float] = []
    with EventLog.from_url(url) as log:
        _emit_one(log, -1, durable=True)  # warm the thread and the pool
        for i in range(count):
            start = time.perf_counter()
            _emit_one(log, i, durable=True)
            latencies.append((time.perf_counter() - start) * 1e3)
    return {
        "calls": count,
        "ms_median": round(statistics.median(latencies), 3),
        "ms_p99": round(_quantile(latencies, 0.99), 3),
        "ms_max": round(max(latencies), 3),
        "per_s": round(count / (sum(latencies) / 1e3)),
    }


@contextmanager
def fresh_url(backend: str) -> Iterator[str]:
    """A URL to an empty database for one measurement."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
            yield f"sqlite:///{tmp}/events.db"
    else:
        with harness.postgres_database("events") as url:
            yield url


def run(
    *,
    quick: bool = False,
    pythons: dict[str, Path] | None = None,
    backends: tuple[str, ...] = BACKENDS,
    log: Log = print,
) -> dict[str, Any]:
    """Every measurement on every backend; writes and returns ``results/event_log.json``."""
    sizes = (
        {"batches": 20, "batch": 1_000, "events": 20_000, "durable": 200}
        if quick
        else {"batches": 200, "batch": 1_000, "events": 200_000, "durable": 2_000}
    )
    results: dict[str, Any] = {}
    for backend in backends:
        log(f"event_log: {backend}")
        with fresh_url(backend) as url:
            alone = measure_emit_cost(
                url, batches=sizes["batches"], batch=sizes["batch"], writer_idle=True
            )
        with fresh_url(backend) as url:
            emit = measure_emit_cost(url, batches=sizes["batches"], batch=sizes["batch"])
        with fresh_url(backend) as url:
            throughput = measure_throughput(url, events=sizes["events"])
        with fresh_url(backend) as url:
            durable = measure_durable_latency(url, count=sizes["durable"])
        results[backend] = {
            "emit_alone": alone,
            "emit": emit,
            "throughput": throughput,
            "durable": durable,
        }
    result: dict[str, Any] = {
        "benchmark": "event_log",
        "timestamp": harness.timestamp(),
        "quick": quick,
        "machine": harness.machine(),
        "postgresql": harness.postgres_version() if "postgresql" in backends else None,
        "versions": _versions(),
        "sizes": sizes,
        "defaults": {"batch_size": 500, "flush_interval": 0.05, "max_buffer": 100_000},
        "payload": PAYLOAD,
        "results": results,
    }
    result["path"] = str(harness.write_result("event_log", result).relative_to(harness.ROOT))
    return result


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("sqlalchemy", "psycopg", "orjson")}


def summary(result: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    rows = [
        ("emit, writer idle (us/call, median)", "emit_alone", "us_median"),
        ("emit, writer idle (us/call, p90)", "emit_alone", "us_p90"),
        ("emit, writer committing (us/call, median)", "emit", "us_median"),
        ("emit, writer committing (us/call, p90)", "emit", "us_p90"),
        ("sustained, committed (events/s)", "throughput", "events_per_s"),
        ("emit phase of that run (s)", "throughput", "emit_phase_s"),
        ("durable emit (ms, median)", "durable", "ms_median"),
        ("durable emit (ms, p99)", "durable", "ms_p99"),
    ]
    backends = list(result["results"])
    width = max(len(label) for label, _, _ in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{b:>12}" for b in backends)]
    for label, group, key in rows:
        cells = "  ".join(f"{result['results'][b][group][key]:>12,}" for b in backends)
        lines.append(f"{label:<{width}}  {cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--backend", action="append", choices=BACKENDS)
    args = parser.parse_args(argv)
    result = run(quick=args.quick, backends=tuple(args.backend or BACKENDS))
    print(summary(result))
    print(f"written to {result['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
