"""Per-minute rollups written at compaction answer the traffic monitors as the raw events do:
every count equal, every p50/p95/p99 within the stated relative error (1 %), whatever was
compacted, wherever the range starts and ends, for any window of whole minutes."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from monitoring_support import START, listed_files, predictions, write

from conveyor.events.schema import Event
from conveyor.monitoring import compact
from conveyor.monitoring.rollups import (
    FOLDER,
    RELATIVE_ERROR,
    ZERO_KEY,
    backfill,
    bucket_value,
    rollup_path,
)
from conveyor.project import Project

#: Neither end on a minute: the partial minutes are read raw, the rest from the rollups.
SINCE = START + timedelta(minutes=7, seconds=13, milliseconds=250)
UNTIL = START + timedelta(hours=2, minutes=51, seconds=41)
COUNTS = (
    "requests",
    "answered",
    "errors_4xx",
    "errors_5xx",
    "shed",
    "cached",
    "rows",
    "max_ms",
    "queue_depth",
    "mean_batch_rows",
    "cpu_percent",
    "rss_mib",
)
QUANTILES = ("p50_ms", "p95_ms", "p99_ms")


def _traffic(n: int, seed: int = 3) -> list[Event]:
    """Predictions of two models (some answered in 0 ms, some without a latency), failed
    requests of every kind, and a few answers far slower than the rest."""
    rng = random.Random(seed)
    events = predictions(n, step_ms=2300, seed=seed)
    extra = []
    for i, event in enumerate(events):
        if event.kind != "prediction":
            continue
        if i % 97 == 0:
            extra.append(
                Event(
                    "prediction.failed",
                    subject=event.subject,
                    subject_version=None if i % 2 else event.subject_version,
                    time=event.time + timedelta(milliseconds=5),
                    payload={
                        "status": rng.choice(("422", "500", "503")),
                        "code": rng.choice(("invalid_input", "internal", "overloaded")),
                        "arm": None if i % 2 else event.payload["arm"],
                    },
                )
            )
        if i % 113 == 0:
            event.payload["latency_ms"] = 0.0
        elif i % 131 == 0:
            event.payload["latency_ms"] = None
        elif i % 41 == 0:
            event.payload["latency_ms"] = round(event.payload["latency_ms"] * 40, 3)
    first, last = events[0].time, events[-1].time
    at, n = first, 0
    while at < last:  # two workers' samples every 10 s
        for pid in (11, 12):
            extra.append(
                Event(
                    "serving.sample",
                    time=at + timedelta(milliseconds=pid),
                    payload={
                        "pid": pid,
                        "host": "h",
                        "cpu_percent": rng.uniform(0, 90),
                        "rss_mib": rng.uniform(100, 300),
                        "queue_depth": rng.randrange(9),
                        "batches": rng.randrange(5),
                        "batch_rows": rng.randrange(50),
                        "shed": rng.randrange(2),
                        "versions": [
                            {
                                "model": "fraud",
                                "version": "3",
                                "queue_rows": rng.randrange(7),
                                "batches": rng.randrange(4),
                                "batch_rows": rng.randrange(40),
                            }
                        ],
                    },
                )
            )
        at += timedelta(seconds=10)
        n += 1
    return sorted([*events, *extra], key=lambda e: e.time)


def _by_group(windows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {(w["model"], w["version"], w["arm"], w["window"]): w for w in windows}


def _agree(exact: list[dict[str, Any]], rolled: list[dict[str, Any]]) -> float:
    """Assert every count is equal and every quantile within the bound; the worst error."""
    want, got = _by_group(exact), _by_group(rolled)
    assert got.keys() == want.keys()
    worst = 0.0
    for key, row in want.items():
        for name in COUNTS:
            if name in row:
                want_value = row[name]
                if isinstance(want_value, float):  # sums of the same numbers, in another order
                    want_value = pytest.approx(want_value, rel=1e-12)
                assert got[key][name] == want_value, (key, name)
        for name in QUANTILES:
            if row[name] is None:
                assert got[key][name] is None, (key, name)
                continue
            error = abs(got[key][name] - row[name])
            assert error <= RELATIVE_ERROR * row[name] + 1e-9, (key, name, got[key], row)
            worst = max(worst, error / row[name] if row[name] else 0.0)
    return worst


def test_rollups_answer_as_the_raw_events_do(project: Project) -> None:
    write(project, _traffic(5_000))
    compact(project, batch_events=1_700, max_batches=2)  # part compacted, part in the tail
    monitor = project.monitoring
    worst = 0.0
    for window in (timedelta(minutes=1), timedelta(minutes=5), timedelta(hours=1)):
        for model in (None, "churn"):
            exact = monitor.system(model, since=SINCE, until=UNTIL, window=window, exact=True)
            rolled = monitor.system(model, since=SINCE, until=UNTIL, window=window)
            assert any("rollups" in note for note in rolled.notes)
            assert not any("rollups" in note for note in exact.notes)
            assert rolled.snapshot.tail_events and rolled.snapshot.files
            assert len(rolled.processes) == len(exact.processes) > 0
            for mine, theirs in zip(rolled.processes, exact.processes, strict=True):
                assert mine.keys() == theirs.keys()
                for name, value in theirs.items():
                    want = pytest.approx(value, rel=1e-12) if isinstance(value, float) else value
                    assert mine[name] == want, (name, mine, theirs)
            worst = max(worst, _agree(exact.windows, rolled.windows))
            latency = monitor.latency(model, since=SINCE, until=UNTIL, window=window)
            latency_exact = monitor.latency(
                model, since=SINCE, until=UNTIL, window=window, exact=True
            )
            worst = max(worst, _agree(latency_exact.windows, latency.windows))
    assert 0 < worst <= RELATIVE_ERROR  # approximate, within the bound
    # a window that is not whole minutes reads every event, exactly
    odd = monitor.system(since=SINCE, until=UNTIL, window=timedelta(seconds=90))
    assert not any("rollups" in note for note in odd.notes)


def test_compaction_writes_a_rollup_per_file_of_the_rolled_kinds_and_clears_dead_ones(
    project: Project,
) -> None:
    write(project, _traffic(2_000))
    compact(project)
    root = Path(project.artifacts.root)
    listed = listed_files(project)
    for path in listed:
        rolled = (root / rollup_path(path)).exists()
        kinds = ("kind=prediction/", "kind=prediction.failed/", "kind=serving.sample/")
        assert rolled == any(kind in path for kind in kinds), path
    on_disk = {str(p.relative_to(root)) for p in (root / FOLDER).rglob("*") if p.is_file()}
    assert on_disk == {rollup_path(p) for p in listed if (root / rollup_path(p)).exists()}

    # what a compactor killed before listing its batch leaves behind
    folder = root / rollup_path(sorted(listed)[0])
    stale = folder.parent / "999999999990-999999999999.parquet"
    temporary = folder.parent / ".000000000001-000000000002.parquet.1234.tmp"
    stale.write_bytes(b"not listed")
    temporary.write_bytes(b"half")
    write(project, _traffic(50, seed=9))
    compact(project)
    assert not stale.exists() and not temporary.exists()


def test_files_listed_before_rollups_are_read_raw_until_backfilled(project: Project) -> None:
    write(project, _traffic(3_000))
    compact(project)
    root = Path(project.artifacts.root)
    for path in (root / FOLDER).rglob("*.parquet"):
        path.unlink()  # as before compaction wrote rollups
    monitor = project.monitoring
    window = timedelta(minutes=5)
    exact = monitor.system(since=SINCE, until=UNTIL, window=window, exact=True)
    before = monitor.system(since=SINCE, until=UNTIL, window=window)
    assert not any("rollups" in note for note in before.notes)
    assert before.windows == exact.windows

    assert backfill(project) > 0
    assert backfill(project) == 0  # once
    after = monitor.system(since=SINCE, until=UNTIL, window=window)
    assert any("rollups" in note for note in after.notes)
    _agree(exact.windows, after.windows)


@pytest.mark.parametrize("backends", ["sqlite"], indirect=True)
def test_a_bucket_reads_back_within_the_relative_error(project: Project) -> None:
    """The bucket DuckDB computes for a latency, read back, is within 1 % of it, from a
    microsecond to an hour (and 0 stays 0)."""
    import duckdb

    from conveyor.monitoring.rollups import _KEY_SQL

    rng = random.Random(0)
    values = [10 ** rng.uniform(-3, 6.6) for _ in range(20_000)] + [0.0, 1.0, 0.001]
    with duckdb.connect() as con:
        keys = con.execute(
            f"SELECT {_KEY_SQL.format(x='x')} FROM unnest($v) AS t(x)", {"v": values}
        ).fetchall()
    for value, (key,) in zip(values, keys, strict=True):
        if value == 0:
            assert key == ZERO_KEY and bucket_value(key) == 0.0
            continue
        assert math.isclose(bucket_value(key), value, rel_tol=RELATIVE_ERROR + 1e-12)


def test_rollups_follow_the_range_to_the_minute(project: Project) -> None:
    """Ranges that start and end on a minute, inside one minute, or past the traffic."""
    write(project, _traffic(1_500))
    compact(project)
    monitor = project.monitoring
    starts = [
        (START + timedelta(minutes=20), START + timedelta(minutes=80)),
        (START + timedelta(minutes=20, seconds=5), START + timedelta(minutes=20, seconds=50)),
        (START - timedelta(hours=3), START + timedelta(hours=9)),
        (datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)),
    ]
    for since, until in starts:
        for window in (timedelta(minutes=1), timedelta(minutes=15)):
            exact = monitor.system(since=since, until=until, window=window, exact=True)
            rolled = monitor.system(since=since, until=until, window=window)
            _agree(exact.windows, rolled.windows)
