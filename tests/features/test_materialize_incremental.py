"""Incremental materialization: the watermark, late rows and the lateness allowance,
aggregates recomputed for every entity, chunks that never split a position, a run that
is killed and continued without redoing or skipping a chunk, and the scheduler."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli_support import conveyor
from conveyor.errors import ConcurrentUpdateError, ConfigError, InvalidInputError
from conveyor.features.materialize import (
    KILL_AFTER_CHUNK_ENV,
    Progress,
    materialize,
    online_features,
)
from conveyor.features.schedule import materialization_schedules
from conveyor.features.settings import features_of
from conveyor.features.watermark import Run, standing, to_ns
from conveyor.pipelines import LocalRunner, Scheduler
from conveyor.project import Project, init_project

NOW = datetime.now(UTC).replace(microsecond=0)
MINUTE = timedelta(minutes=1)
T0 = NOW - timedelta(minutes=50)

SPEC = """
features:
  entities:
    customer: {join_keys: [customer_id]}
  views:
    spend:
      entities: [customer]
      source: {path: spend.parquet}
      event_time: ts
      created_time: ingested_at
      features:
        - {name: amount, type: double}
      aggregates:
        - {column: amount, functions: [sum, count], windows: [1h, 24h]}
    clicks:
      entities: [customer]
      source: {path: clicks.parquet}
      event_time: ts
      features:
        - {name: clicks, type: int64}
"""


def _stamps(values: list[datetime]) -> pa.Array:
    return pa.array(values, pa.timestamp("us", "UTC"))


def write_spend(root: Path, rows: list[tuple[int, datetime, datetime, float]]) -> None:
    """spend.parquet: (customer, event time, created time, amount) per row."""
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([r[0] for r in rows], pa.int64()),
                "ts": _stamps([r[1] for r in rows]),
                "ingested_at": _stamps([r[2] for r in rows]),
                "amount": pa.array([r[3] for r in rows], pa.float64()),
            }
        ),
        root / "spend.parquet",
    )


def write_clicks(root: Path, rows: list[tuple[int, datetime, int]]) -> None:
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([r[0] for r in rows], pa.int64()),
                "ts": _stamps([r[1] for r in rows]),
                "clicks": pa.array([r[2] for r in rows], pa.int64()),
            }
        ),
        root / "clicks.parquet",
    )


FIRST = [
    (1, T0, T0 + MINUTE, 10.0),
    (1, T0 + 30 * MINUTE, T0 + 31 * MINUTE, 20.0),
    (2, T0, T0 + MINUTE, 5.0),
]


def make_root(root: Path, extra: str = "") -> Path:
    init_project(root, name="incremental")
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(SPEC + extra)
    write_spend(root, FIRST)
    write_clicks(root, [(1, T0, 3), (2, T0, 4)])
    return root


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with Project.open(make_root(tmp_path), env={}) as opened:
        yield opened


def amount(project: Project, customer: int, feature: str = "amount", **options: Any) -> Any:
    (row,) = online_features(project, [{"customer_id": customer}], [f"spend:{feature}"], **options)
    return row["features"][feature]


def test_the_first_run_is_full_then_only_rows_after_the_watermark_are_read(
    project: Project,
) -> None:
    (first,) = materialize(project, ["spend"], now=NOW)
    assert (first.mode, first.rows, first.written, first.resumed) == ("full", 3, 2, False)
    assert first.watermark_before is None
    assert first.watermark_after == T0 + 31 * MINUTE  # the latest created time
    assert amount(project, 1) == 20.0

    later = T0 + 40 * MINUTE
    write_spend(project.root, [*FIRST, (1, later, later, 99.0), (3, later, later, 7.0)])
    (second,) = materialize(project, ["spend"], now=NOW)
    assert (second.mode, second.rows, second.entities) == ("incremental", 2, 2)
    assert second.watermark_before == first.watermark_after
    assert second.watermark_after == later
    assert amount(project, 1) == 99.0 and amount(project, 3) == 7.0

    (idle,) = materialize(project, ["spend"], now=NOW)
    assert (idle.rows, idle.chunks, idle.written) == (0, 0, 0)
    assert idle.watermark_before == idle.watermark_after == later
    assert idle.aggregates == 3  # every entity, even with no new row

    (full,) = materialize(project, ["spend"], mode="full", now=NOW)
    assert (full.mode, full.rows, full.watermark_after) == ("full", 5, later)
    assert (full.written, full.kept) == (3, 0)  # the same rows again: rewritten as they were
    with pytest.raises(InvalidInputError, match="'incremental' or 'full'"):
        materialize(project, ["spend"], mode="partial")  # type: ignore[arg-type]


def test_a_late_row_is_read_within_the_lateness_and_by_a_full_run(project: Project) -> None:
    materialize(project, ["spend", "clicks"], now=NOW)
    # Customer 2's newer row arrives late: created before the watermark (T0 + 31 min).
    late = (2, T0 + 20 * MINUTE, T0 + 25 * MINUTE, 6.0)
    write_spend(project.root, [*FIRST, late])
    (skipped,) = materialize(project, ["spend"], now=NOW)
    assert skipped.rows == 0 and amount(project, 2) == 5.0
    (within,) = materialize(project, ["spend"], now=NOW, lateness=10 * MINUTE)
    # Read again: created after T0 + 21 min (the watermark less 10 min): the row at
    # T0 + 31 min (written before: kept as it is) and the late one.
    assert (within.rows, within.written) == (2, 2)
    assert amount(project, 2) == 6.0
    assert within.watermark_after == T0 + 31 * MINUTE  # never moves back

    # A view without a created time is positioned by event time.
    write_clicks(project.root, [(1, T0, 3), (2, T0, 4), (2, T0 - MINUTE, 9), (3, T0, 1)])
    (clicks,) = materialize(project, ["clicks"], now=NOW)
    assert clicks.rows == 0  # both new rows are at or before the watermark (T0)
    (full,) = materialize(project, ["clicks"], mode="full", now=NOW)
    assert full.rows == 4
    (row,) = online_features(project, [{"customer_id": 3}], ["clicks:clicks"])
    assert row["features"]["clicks"] == 1
    (row,) = online_features(project, [{"customer_id": 2}], ["clicks:clicks"])
    assert row["features"]["clicks"] == 4  # the older event did not replace the newer


def test_incremental_runs_recompute_aggregates_for_every_entity_as_of_now(
    project: Project,
) -> None:
    materialize(project, ["spend"], now=NOW)
    assert amount(project, 1, "amount_sum_1h", now=NOW) == 30.0  # both rows: 50 and 20 min old
    assert amount(project, 1, "amount_count_24h", now=NOW) == 2
    two_hours = NOW + timedelta(hours=2)
    (again,) = materialize(project, ["spend"], now=two_hours)
    assert again.rows == 0 and again.aggregates == 2
    # Nothing new, yet the 1 h windows have slid past every row.
    assert amount(project, 1, "amount_sum_1h", now=two_hours) == 0.0
    assert amount(project, 2, "amount_count_1h", now=two_hours) == 0
    assert amount(project, 1, "amount_count_24h", now=two_hours) == 2


def test_a_chunk_never_ends_between_rows_of_one_position(project: Project) -> None:
    same = T0 + 10 * MINUTE
    rows = [
        (1, T0, T0, 1.0),
        (2, T0, T0 + MINUTE, 2.0),
        (3, T0, same, 3.0),
        (4, T0, same, 4.0),
        (5, T0, same, 5.0),
    ]
    write_spend(project.root, rows)
    seen: list[Progress] = []
    (done,) = materialize(project, ["spend"], chunk_rows=2, progress=seen.append, now=NOW)
    assert done.chunks == 2  # [row 0, row 1], [rows 2-4]: 2 rows, then 3 of one position
    chunks = [(p.rows, p.chunks, p.chunk_total) for p in seen if p.phase == "rows"]
    assert chunks == [(0, 0, 2), (2, 1, 2), (5, 2, 2)]
    assert [p.phase for p in seen][-2:] == ["aggregates", "done"]
    with pytest.raises(InvalidInputError, match="chunk_rows"):
        materialize(project, ["spend"], chunk_rows=0)


def test_a_changed_definition_makes_the_next_run_full(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    with Project.open(root, env={}) as project:
        materialize(project, ["spend"], now=NOW)
        (idle,) = materialize(project, ["spend"], now=NOW)
        assert (idle.mode, idle.rows) == ("incremental", 0)
    text = (root / "conveyor.yaml").read_text()
    (root / "conveyor.yaml").write_text(
        text.replace("ingested_at\n", "ingested_at\n      ttl: 7d\n")
    )
    with Project.open(root, env={}) as project:
        (changed,) = materialize(project, ["spend"], now=NOW)
        assert (changed.mode, changed.rows) == ("full", 3)


def test_a_later_run_takes_a_view_over_and_the_earlier_one_stops(project: Project) -> None:
    view = features_of(project.spec).views["spend"]
    first = Run.begin(project.store, "spend", view, "incremental", timedelta(0))
    first.checkpoint(to_ns(T0), 1, 10)
    second = Run.begin(project.store, "spend", view, "incremental", timedelta(0))
    assert second.resumed and second.start == to_ns(T0) and second.chunks_before == 1
    with pytest.raises(ConcurrentUpdateError, match="took it over"):
        first.checkpoint(to_ns(T0 + MINUTE), 2, 20)
    assert second.finish(to_ns(T0 + MINUTE)) == to_ns(T0 + MINUTE)
    assert not standing(project.store, "spend").interrupted


# -- a crash in the middle -------------------------------------------------------------


def _cli(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "features", *args, "-C", str(root)],
        env={**clean, "CONVEYOR_FEATURES__MATERIALIZE__CHUNK_ROWS": "25", **env},
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _in_process(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (cli_support), for what needs no kill."""
    settings = {"CONVEYOR_FEATURES__MATERIALIZE__CHUNK_ROWS": "25", **env}
    return conveyor("features", *args, "-C", str(root), env=settings, cwd=root)


def _records(path: Path) -> dict[str, Any]:
    """Every key of a SQLite online store, and its record (aggregates: their values only,
    since their event time is the moment each run computed them)."""
    connection = sqlite3.connect(path)
    try:
        found = {}
        for key, value in connection.execute("SELECT key, value FROM kv"):
            record = orjson.loads(value)
            found[key] = record["v"] if key.endswith("aggregates") else record
        return found
    finally:
        connection.close()


def test_a_killed_run_is_continued_from_its_checkpoint_without_redoing_a_chunk(
    tmp_path: Path,
) -> None:
    root = make_root(tmp_path / "project")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=45)
    rows = []
    # 100 customers, the first 20 twice (their rows 100-119 supersede rows 0-19, which are
    # not written); created times in pairs. Written: rows 20-119, by created time.
    for i in range(120):
        created = start + timedelta(seconds=20 * (i // 2))
        rows.append((i % 100, start + timedelta(seconds=20 * i), created, float(i)))
    write_spend(root, rows)

    killed = _cli(root, "materialize", "spend", **{KILL_AFTER_CHUNK_ENV: "2"})
    assert killed.returncode == -9, killed.stderr
    with Project.open(root, env={}) as project:
        stopped = standing(project.store, "spend")
    # 25 rows a chunk, made 26 so as not to split a pair of equal created times.
    assert stopped.interrupted and (stopped.run_chunks, stopped.run_rows) == (2, 52)
    assert stopped.checkpoint == to_ns(rows[20 + 51][2])

    resumed = _in_process(root, "materialize", "spend", "--json")
    assert resumed.returncode == 0, resumed.stderr
    (done,) = orjson.loads(resumed.stdout)["items"]
    assert done["resumed"] and done["mode"] == "full"
    # rows 72-119 are after the checkpoint: 48 customers' latest rows, in 26 + 22
    assert (done["skipped_chunks"], done["chunks"], done["rows"]) == (2, 2, 48)
    assert done["written"] == 48
    assert done["watermark_after"] == rows[-1][2].isoformat()

    clean_db = tmp_path / "clean.db"
    clean = _in_process(
        root, "materialize", "spend", "--full", "--json", CONVEYOR_ONLINE=f"sqlite:///{clean_db}"
    )
    assert clean.returncode == 0, clean.stderr
    (whole,) = orjson.loads(clean.stdout)["items"]
    assert (whole["chunks"], whole["rows"], whole["resumed"]) == (4, 120, False)
    assert whole["written"] == 100  # each customer's latest row, once

    crashed = _records(root / ".conveyor" / "online.db")
    assert len(crashed) == 200  # 100 customers, their latest row and their aggregates
    assert crashed == _records(clean_db)


def test_the_cli_shows_progress_and_reports_the_watermark(project: Project) -> None:
    out = _in_process(project.root, "materialize", "spend")
    assert out.returncode == 0, out.stderr
    assert "spend: 3 rows read (full), 2 entities: 2 written" in out.stdout
    assert f"watermark - -> {(T0 + 31 * MINUTE).strftime('%Y-%m-%d %H:%M:%S')}" in out.stdout
    assert "spend" in out.stderr and "done" in out.stderr  # the progress bar, on stderr
    quiet = _in_process(project.root, "materialize", "spend", "--json")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert orjson.loads(quiet.stdout)["items"][0]["mode"] == "incremental"


# -- scheduled ---------------------------------------------------------------------------


def at(hour: int, minute: int) -> datetime:
    return datetime(2027, 2, 1, hour, minute, tzinfo=UTC)


def test_the_scheduler_fires_the_materialization_pipeline(tmp_path: Path) -> None:
    extra = '  materialize: {cron: "*/15 * * * *", views: [spend]}\n'
    with Project.open(make_root(tmp_path, extra), env={}) as project:
        (pipeline,) = materialization_schedules(project)
        assert pipeline.name == "features.materialize"
        runner = LocalRunner.for_project(project, heartbeat_interval=0.2, stale_after=60)
        scheduler = Scheduler(runner, [pipeline])
        assert scheduler.tick(now=at(12, 1)) == []  # first sight: the next slot is 12:15
        (run,) = scheduler.tick(now=at(12, 16))
        assert run.succeeded, run.error
        assert run.params["triggers"] == [{"kind": "schedule", "slot": at(12, 15).isoformat()}]
        (done,) = run.outputs["materialized"]
        assert (done["view"], done["mode"], done["rows"]) == ("spend", "full", 3)
        assert amount(project, 1) == 20.0
        assert standing(project.store, "clicks").watermark is None  # not in views
        assert scheduler.tick(now=at(12, 17)) == []


def test_a_schedule_needs_a_cron_and_known_views(tmp_path: Path) -> None:
    with Project.open(make_root(tmp_path / "a"), env={}) as project:
        assert materialization_schedules(project) == []
    root = make_root(tmp_path / "b", "  materialize: {cron: '0 * * * *', views: [spnd]}\n")
    with pytest.raises(ConfigError, match=r"materialize\.views: no view 'spnd'"):
        Project.open(root, env={})


def test_conveyor_pipeline_schedule_picks_the_materialization_up(tmp_path: Path) -> None:
    root = make_root(tmp_path, '  materialize: {cron: "*/15 * * * *"}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "pipeline", "schedule", "-C", str(root)],
        env={**env, "PYTHONUNBUFFERED": "1"},
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert scheduler.stdout is not None
        first = scheduler.stdout.readline()
        assert first.startswith("scheduling features.materialize every"), (
            first + scheduler.stderr.read() if scheduler.stderr else first
        )
    finally:
        scheduler.terminate()  # SIGTERM: the scheduler stops after its tick
        scheduler.communicate(timeout=60)
    assert scheduler.returncode == 0
