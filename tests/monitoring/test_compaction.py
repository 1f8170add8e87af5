"""Compaction copies the event log into hourly Parquet files: every event exactly once, on
SQLite and PostgreSQL, through re-runs, crashes (a real compactor killed with SIGKILL),
and a second compactor taking over (PostgreSQL's commits out of seq order:
test_postgres_order.py)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
from monitoring_support import (
    checkpoint,
    copied_rows,
    files_on_disk,
    listed_files,
    log_rows,
    predictions,
    write,
)

from conveyor.errors import ConcurrentUpdateError
from conveyor.events.schema import Event
from conveyor.monitoring import compact
from conveyor.monitoring.columnar import parse_file_name
from conveyor.project import Project


def test_every_event_is_copied_once_into_hourly_partitions_named_by_seq(
    project: Project,
) -> None:
    write(project, predictions(3_000))
    rows = log_rows(project)
    done = compact(project, batch_events=1_000)
    assert done.events == len(rows) and done.last_seq == rows[-1][0]
    assert copied_rows(project) == rows
    assert files_on_disk(project) == listed_files(project) == set(done.paths)
    kinds = set()
    for path in done.paths:
        folder, name = path.rsplit("/", 1)
        _, kind, date, hour = folder.split("/")
        kinds.add(kind)
        assert date.startswith("date=2026-12-0") and hour.startswith("hour=")
        first, last = parse_file_name(name)  # type: ignore[misc]
        assert first <= last
    # Three hours and a bit of traffic in batches of 1,000: several hours, both kinds.
    assert kinds == {"kind=prediction", "kind=route.set"}
    assert len({p.rsplit("/", 1)[0] for p in done.paths}) >= 5

    # The run recorded itself; the next run copies that event and records nothing, so an
    # idle log comes to rest.
    (event,) = log_rows(project)[len(rows) :]
    assert event[3] == "monitoring.compacted"
    assert orjson.loads(event[-1])["events"] == done.events
    assert compact(project).events == 1
    again = compact(project)
    assert (again.events, again.files, again.last_seq) == (0, 0, done.last_seq + 1)
    assert copied_rows(project) == log_rows(project)

    write(project, predictions(500, seed=1))
    more = compact(project)
    assert more.events == 501 and more.first_seq == done.last_seq + 1  # 500 and a route.set
    assert copied_rows(project) == log_rows(project, through=more.last_seq)
    assert more.total_events == more.last_seq


def test_payload_fields_are_promoted_to_typed_columns_and_the_json_kept(
    project: Project,
) -> None:
    import duckdb

    log = project.events
    log.append_many(
        [
            Event(
                "prediction",
                subject="fraud",
                subject_version="3",
                payload={
                    "version_id": "v3",
                    "arm": "champion",
                    "flag": "beta",
                    "latency_ms": 2,
                    "cached": True,
                    "rows": 4,
                    "output": [0.9],
                },
            ),
            # A free kind with the same names, of other types: nulls, the JSON keeps them.
            Event("my.step", payload={"latency_ms": "slow", "rows": [1], "arm": 3, "x": 1}),
            Event("prediction.shadow", subject="fraud", payload={"status": "error"}),
        ]
    )
    log.flush()
    compact(project)
    root = Path(project.artifacts.root)
    with duckdb.connect() as con:
        got = con.sql(
            "SELECT kind, version_id, arm, flag, latency_ms, cached, rows, status, payload "
            f"FROM read_parquet('{root}/events/**/*.parquet') "
            "WHERE kind <> 'project.initialized' ORDER BY seq"
        ).fetchall()
    assert [g[:8] for g in got] == [
        ("prediction", "v3", "champion", "beta", 2.0, True, 4, None),
        ("my.step", None, "3", None, None, None, None, None),  # a number as text: its text
        ("prediction.shadow", None, None, None, None, None, None, "error"),
    ]
    assert orjson.loads(got[1][8]) == {"latency_ms": "slow", "rows": [1], "arm": 3, "x": 1}


_COMPACTOR = """
import os, signal, sys
from conveyor.monitoring import compact
from conveyor.project import Project

kill_at, batch = int(sys.argv[2]), int(sys.argv[3])
seen = 0

def tell(p):
    global seen
    if p.phase == "start":
        print("started", flush=True)
    if p.phase in ("file", "batch"):
        seen += 1
        if seen == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

with Project.open(sys.argv[1]) as project:
    compact(project, batch_events=batch, progress=tell)
"""


def _compactor(
    project: Project, env: dict[str, str], kill_at: int, batch: int = 400
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _COMPACTOR, str(project.root), str(kill_at), str(batch)],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_compactor_killed_mid_way_again_and_again_leaves_an_exact_copy(
    project: Project, backends: dict[str, str]
) -> None:
    """SIGKILL at chosen points (a file renamed but not listed; a batch committed) and at
    random moments, with new events arriving between runs and batches of another size each
    run (so a dead run's files have names the next run does not write); the copy ends equal
    to the log, every id once, and no file on disk that is not listed."""
    write(project, predictions(4_000))
    rng = random.Random(7)
    kills = 0
    # Points count files written and batches committed: 1 is the first file of the first
    # batch, renamed into place and not yet listed.
    for round_, kill_at in enumerate((1, 3, 6, 0, 10, 0)):
        proc = _compactor(project, backends, kill_at or 10_000, rng.randrange(250, 600))
        if not kill_at:  # killed from outside, at a random moment of its work
            assert proc.stdout is not None
            assert proc.stdout.readline() == "started\n", proc.stderr
            time.sleep(rng.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
        if proc.returncode == -signal.SIGKILL:
            kills += 1
        else:  # finished before the signal came: fine, but it must have worked
            assert proc.returncode == 0, stderr
        if round_ % 2:
            write(project, predictions(300, seed=round_))
    assert kills >= 4
    last = _compactor(project, backends, 10_000)
    _, stderr = last.communicate(timeout=120)
    assert last.returncode == 0, stderr

    compact(project)  # and the last run's own event: the copy is at rest
    rows, copied = log_rows(project), copied_rows(project)
    assert copied == rows
    ids = [r[1] for r in copied]
    assert len(ids) == len(set(ids)) == len(rows)
    assert checkpoint(project) == rows[-1][0]
    assert files_on_disk(project) == listed_files(project)


def test_a_second_compactor_takes_over_and_the_first_stops(project: Project) -> None:
    write(project, predictions(2_000))
    started = threading.Event()
    resume = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        def tell(p: object) -> None:
            if getattr(p, "phase", None) == "file" and not started.is_set():
                started.set()
                resume.wait(30)

        try:
            compact(project, batch_events=500, progress=tell)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(30)
    second = compact(project, batch_events=500)  # claims the copy while the first waits
    resume.set()
    thread.join(30)
    assert len(errors) == 1 and isinstance(errors[0], ConcurrentUpdateError), errors
    assert "took it over" in str(errors[0])
    assert second.last_seq == checkpoint(project)
    assert copied_rows(project) == log_rows(project, through=second.last_seq)


def test_the_scheduler_fires_the_compaction_pipeline(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from conveyor.monitoring.schedule import compaction_schedules
    from conveyor.pipelines.runner import LocalRunner
    from conveyor.pipelines.scheduler import Scheduler
    from conveyor.project import init_project

    root = tmp_path / "proj"
    init_project(root)
    with Project.open(root, env={}) as project:
        assert compaction_schedules(project) == []
    cron = {"CONVEYOR_MONITORING__COMPACTION__CRON": "*/10 * * * *"}
    with Project.open(root, env=cron) as project:
        write(project, predictions(300))
        (pipeline,) = compaction_schedules(project)
        assert pipeline.name == "monitoring.compact"
        runner = LocalRunner.for_project(project, heartbeat_interval=0.2, stale_after=60)
        scheduler = Scheduler(runner, [pipeline])
        at = datetime(2027, 2, 1, 12, 1, tzinfo=UTC)
        assert scheduler.tick(now=at) == []  # first sight: the next slot is 12:10
        (run,) = scheduler.tick(now=at.replace(minute=11))
        assert run.succeeded, run.error
        done = run.outputs["compaction"]
        # 300 predictions, a route.set, and the run's own pipeline.started, step.started.
        assert done["events"] == 303 and done["last_seq"] == checkpoint(project)
        # The pipeline's own events (pipeline.started...) are in the log: the next run
        # copies them, and the copy still equals the log.
        compact(project)
        assert copied_rows(project) == log_rows(project, through=checkpoint(project))
