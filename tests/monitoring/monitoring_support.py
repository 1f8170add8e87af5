"""What the monitoring tests share: a project on a backend set, prediction traffic written
to its event log, and the event log and its columnar copy read back to compare."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conveyor.events.schema import Event
from conveyor.project import Project

#: Traffic starts here: three hours and a bit, so the copy has several hour partitions.
START = datetime(2026, 12, 4, 5, 40, tzinfo=UTC)
ARMS = {"fraud": (("3", "champion"), ("4", "challenger")), "churn": (("7", "direct"),)}


def predictions(
    n: int, *, start: datetime = START, step_ms: int = 1900, seed: int = 0
) -> list[Event]:
    """``n`` prediction events as the server writes them, ``step_ms`` apart, over two models,
    their versions and arms; one in ten answers from the cache; a few other kinds between."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        model = "fraud" if rng.random() < 0.8 else "churn"
        version, arm = rng.choice(ARMS[model])
        when = start + timedelta(milliseconds=step_ms * i + rng.randrange(step_ms))
        events.append(
            Event(
                "prediction",
                subject=model,
                subject_version=version,
                request_id=f"req-{seed}-{i}",
                actor="key:gateway",
                time=when,
                payload={
                    "version_id": f"{model}-v{version}",
                    "arm": arm,
                    "flag": None,
                    "latency_ms": round(rng.lognormvariate(0.7, 0.5), 3),
                    "cached": rng.random() < 0.1,
                    "rows": rng.choice((1, 1, 1, 4)),
                    "output": [round(rng.random(), 4)],
                },
            )
        )
        if i % 500 == 250:
            events.append(
                Event("route.set", subject=model, time=when, payload={"revision": i, "new": {}})
            )
    return events


def write(project: Project, events: list[Event]) -> None:
    project.events.append_many(events)
    project.events.flush()


def log_rows(project: Project, through: int | None = None) -> list[tuple[Any, ...]]:
    """Every event of the log (up to seq ``through``), as its scan gives them (seq, columns,
    payload text)."""
    return project.events.scan(after=0, through=through)  # type: ignore[attr-defined,no-any-return]


def copied_rows(project: Project) -> list[tuple[Any, ...]]:
    """Every row of the files the copy lists, in seq order, with the scan's columns."""
    import duckdb
    import sqlalchemy as sa

    from conveyor.monitoring.columnar import EVENT_COLUMNS
    from conveyor.monitoring.tables import CompactedFileRecord as F

    with project.store.read() as session:
        paths = list(session.execute(sa.select(F.path)).scalars())
    if not paths:
        return []
    root = Path(project.artifacts.root)
    files = ", ".join(f"'{root / p}'" for p in paths)
    columns = ", ".join(EVENT_COLUMNS)
    with duckdb.connect() as con:
        return con.sql(f"SELECT {columns} FROM read_parquet([{files}]) ORDER BY seq").fetchall()


def files_on_disk(project: Project) -> set[str]:
    root = Path(project.artifacts.root)
    return {str(p.relative_to(root)) for p in (root / "events").rglob("*") if p.is_file()}


def listed_files(project: Project) -> set[str]:
    import sqlalchemy as sa

    from conveyor.monitoring.tables import CompactedFileRecord as F

    with project.store.read() as session:
        return set(session.execute(sa.select(F.path)).scalars())


def checkpoint(project: Project) -> int:
    import sqlalchemy as sa

    from conveyor.monitoring.tables import CompactionRecord as R

    with project.store.read() as session:
        return int(session.execute(sa.select(R.last_seq)).scalar() or 0)
