"""The engines for real: spawned worker processes (one killed midway, then the run
resumed), Ray Data on a local cluster, PostgreSQL in and out, S3 (moto) in and out,
the schedule and the CLI."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from scoring_support import (
    FEATURES,
    expected,
    make_project,
    read_output,
    rows,
    write_parquet_folder,
)

from conveyor.errors import BackendUnavailableError
from conveyor.project import Project
from conveyor.scoring import Progress, score_batch
from conveyor.scoring.rows import PREDICTION, REASON


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with make_project(tmp_path / "proj") as opened:
        yield opened


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_worker_killed_midway_then_resume_scores_only_what_is_missing(
    project: Project, tmp_path: Path
) -> None:
    from concurrent.futures.process import BrokenProcessPool

    source = write_parquet_folder(tmp_path / "in", files=4, rows_each=2000, row_group=200)
    args: dict[str, Any] = {"input": str(tmp_path / "in"), "chunk_rows": 150}
    out = tmp_path / "out"
    pids: list[int] = []

    def kill_one(p: Progress) -> None:
        if p.partitions_done == 1:  # one partition recorded, 39 to go: kill -9 a worker
            os.kill(pids[0], signal.SIGKILL)
            deadline = time.monotonic() + 30
            while not _gone(pids[0]) and time.monotonic() < deadline:
                time.sleep(0.01)

    with pytest.raises(BrokenProcessPool):
        score_batch(
            project,
            "lr@1",
            output=str(out),
            workers=2,
            on_workers=pids.extend,
            progress=kill_one,
            **args,
        )
    (failed,) = project.store.runs.list(kind="scoring").items
    assert failed.status == "failed" and "worker process died" in (failed.error or "")
    [event] = project.events.query(kind="scoring.batch_failed").items
    done_before = event.payload["done"]
    assert 1 <= done_before < 40

    resumed = score_batch(project, "lr@1", output=str(out), workers=2, resume=failed.id, **args)
    assert resumed.run_id == failed.id
    assert resumed.partitions == 40
    assert resumed.scored_now <= 40 - done_before  # what was recorded is not scored again
    assert (resumed.rows, resumed.scored) == (8000, 8000)
    assert project.store.runs.get(failed.id).status == "succeeded"

    clean = score_batch(project, "lr@1", output=str(tmp_path / "clean"), workers=0, **args)
    after_kill, reference = read_output(out), read_output(tmp_path / "clean")
    assert after_kill.column("id").to_pylist() == list(range(8000))  # no row twice, none lost
    assert after_kill.equals(reference)
    np.testing.assert_array_equal(
        after_kill.column(PREDICTION).to_numpy(), expected(project, source.sort_by("id"))
    )
    assert {r.sha256 for r in resumed.results} == {r.sha256 for r in clean.results}
    assert sorted(p.name for p in out.glob("part-*")) == sorted(
        p.name for p in (tmp_path / "clean").glob("part-*")
    )


# Ray Data's own DataContext warns about its own deprecated fields when it is first built.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ray_data_runs_the_same_scoring(project: Project, tmp_path: Path) -> None:
    pytest.importorskip("ray.data")
    write_parquet_folder(tmp_path / "in", files=2, rows_each=300, row_group=100)
    args: dict[str, Any] = {"input": str(tmp_path / "in"), "chunk_rows": 64}
    local = score_batch(project, "lr@1", output=str(tmp_path / "local"), workers=0, **args)
    on_ray = score_batch(
        project, "lr@1", output=str(tmp_path / "ray"), engine="ray", workers=1, **args
    )
    assert on_ray.engine == "ray" and on_ray.partitions == 6
    assert read_output(tmp_path / "ray").equals(read_output(tmp_path / "local"))
    assert {r.sha256 for r in on_ray.results} == {r.sha256 for r in local.results}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_an_unreachable_ray_address_is_a_backend_error(project: Project, tmp_path: Path) -> None:
    pytest.importorskip("ray.data")
    write_parquet_folder(tmp_path / "in", files=1, rows_each=10, row_group=10)
    with pytest.raises(BackendUnavailableError, match=r"127\.0\.0\.1:1"):
        score_batch(
            project,
            "lr@1",
            input=str(tmp_path / "in"),
            output=str(tmp_path / "out"),
            engine="ray",
            ray_address="ray://127.0.0.1:1",
        )


def test_a_query_scored_into_a_postgresql_table_by_upsert(
    project: Project, tmp_path: Path, pg_url: str
) -> None:
    table = rows(1000)
    frame = table.to_pandas()
    frame.loc[10, "f0"] = None  # a row the model cannot take
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        frame.to_sql("customers", engine, index=False)
        args: dict[str, Any] = {
            "input": f"sql:{pg_url}",
            "query": "SELECT * FROM customers ORDER BY id",
            "output": f"sql:{pg_url}",
            "table": "scores",
            "key": "id",
            "chunk_rows": 300,
            "workers": 0,
            "rejected_output": str(tmp_path / "rejected"),
        }
        first = score_batch(project, "lr@1", **args)
        assert (first.partitions, first.rows, first.scored, first.rejected) == (4, 1000, 999, 1)
        again = score_batch(project, "lr@1", **args)  # a new run over the same rows
        assert again.scored == 999
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT id, prediction FROM scores ORDER BY id")).all()
        assert [r.id for r in stored] == [i for i in range(1000) if i != 10]  # upserted, once
        keep = table.filter(pa.compute.not_equal(table.column("id"), 10))
        np.testing.assert_array_equal([r.prediction for r in stored], expected(project, keep))
        rejected = pa.concat_tables(
            [pq.read_table(p) for p in (tmp_path / "rejected").glob("*.parquet")]
        )
        assert rejected.column("id").to_pylist() == [10]
        assert "'f0' is null" in rejected.column(REASON)[0].as_py()
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}"},
    }
    try:
        yield options
    finally:
        server.stop()


def test_parquet_on_s3_is_scored_into_s3(
    project: Project, tmp_path: Path, s3: dict[str, Any]
) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**s3)
    fs.mkdir("scoring")
    source = write_parquet_folder(tmp_path / "in", files=2, rows_each=500, row_group=250)
    fs.put(str(tmp_path / "in") + "/", "scoring/in/", recursive=True)
    result = score_batch(
        project,
        "lr@1",
        input="s3://scoring/in/",
        output="s3://scoring/out/",
        storage_options=s3,
        workers=0,
    )
    assert (result.partitions, result.rows) == (4, 1000)
    manifest = json.loads(fs.cat("scoring/out/_manifest.json"))
    assert manifest["rows"] == 1000 and len(manifest["partitions"]) == 4
    files = sorted(fs.glob("scoring/out/part-*.parquet"))
    scored = pa.concat_tables([pq.read_table(fs.open(f, "rb")) for f in files]).sort_by("id")
    np.testing.assert_array_equal(
        scored.column(PREDICTION).to_numpy(), expected(project, source.sort_by("id"))
    )
    assert scored.column_names == ["id", *FEATURES, PREDICTION]


def test_a_scheduled_job_scores_on_its_cron(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from conveyor.pipelines import LocalRunner, Scheduler
    from conveyor.scoring.schedule import scoring_schedules

    root = tmp_path / "proj"
    make_project(root).close()
    write_parquet_folder(tmp_path / "in", files=1, rows_each=100, row_group=50)
    with open(root / "conveyor.yaml", "a", encoding="utf-8") as spec:
        spec.write(
            "scoring:\n  jobs:\n    - name: nightly\n      model: lr@1\n"
            f"      input: {tmp_path / 'in'}\n      output: {tmp_path / 'out'}/{{date}}\n"
            '      cron: "0 2 * * *"\n      workers: 0\n'
        )
    with Project.open(root) as project:
        (pipeline,) = scoring_schedules(project)
        assert pipeline.name == "scoring.nightly"
        runner = LocalRunner.for_project(project, heartbeat_interval=0.2, stale_after=60)
        scheduler = Scheduler(runner, [pipeline])
        assert scheduler.tick(now=datetime(2027, 2, 1, 1, 0, tzinfo=UTC)) == []
        (run,) = scheduler.tick(now=datetime(2027, 2, 1, 2, 1, tzinfo=UTC))
        assert run.succeeded, run.error
        assert run.outputs["scored"]["rows"] == 100
        (folder,) = (tmp_path / "out").iterdir()  # today's folder
        assert read_output(folder).num_rows == 100


def test_the_cli_scores_a_batch(project: Project, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from conveyor.cli import app

    write_parquet_folder(tmp_path / "in", files=1, rows_each=100, row_group=100)
    args = ["score", "batch", "lr@1", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    answer = CliRunner().invoke(app, [*args, "--workers", "0", "-C", str(project.root), "--json"])
    assert answer.exit_code == 0, answer.output
    result = json.loads(answer.output)
    assert (result["rows"], result["scored"], result["partitions"]) == (100, 100, 1)
    plain = CliRunner().invoke(
        app, [*args, "--workers", "0", "-C", str(project.root), "--resume", result["run_id"]]
    )
    assert plain.exit_code != 0 and "already scored every partition" in plain.output


def test_the_whole_run_killed_midway_then_resumed_from_the_cli(
    project: Project, tmp_path: Path, pg_url: str
) -> None:
    """``conveyor score batch`` (a real process, 2 workers) reading a query that stops at row
    500 until told: killed with SIGKILL (its whole process group) once 5 partitions are
    recorded, then resumed; the output equals a clean run's, no row twice."""
    import subprocess
    import sys
    import uuid

    token = uuid.uuid4().hex
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE pause (x int)"))
        conn.execute(sa.text("INSERT INTO pause VALUES (1)"))
    features = ", ".join(f"{fn}(g * {i + 1}) AS f{i}" for i, fn in enumerate(("sin", "cos") * 2))
    query = (
        f"SELECT g AS id, {features}, CASE WHEN g = 500 AND EXISTS (SELECT 1 FROM pause) "
        "THEN pg_sleep(120)::text END AS pause "
        "FROM generate_series(0, 999) AS g"
    )
    out = tmp_path / "out"
    source = f"sql:{pg_url}&application_name={token}"  # to find the killed run's session
    args = ["score", "batch", "lr@1", "-i", source, "--query", query, "-o", str(out)]
    args += ["--chunk-rows", "100", "-C", str(project.root)]
    cli = [sys.executable, "-m", "conveyor.cli", *args]
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen([*cli, "--workers", "2"], start_new_session=True, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while _recorded(project) < 5:  # 0..499 scored; the cursor now waits at row 500
            assert run.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, "the run never reached row 500"
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGKILL)  # the coordinator and its workers, at once
        run.wait()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
        log.close()
        with engine.begin() as conn:  # the killed run's query still sleeps in the server
            conn.execute(sa.text("DELETE FROM pause"))
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :token"
                ),
                {"token": token},
            )
    (killed,) = project.store.runs.list(kind="scoring").items
    assert killed.status == "running" and _recorded(project) == 5  # it died mid-run

    resumed = subprocess.run(
        [*cli, "--workers", "0", "--resume", killed.id, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert (result["run_id"], result["partitions"], result["scored_now"]) == (killed.id, 10, 5)
    assert result["rows"] == 1000

    clean = score_batch(
        project,
        "lr@1",
        input=source,
        query=query,
        output=str(tmp_path / "clean"),
        chunk_rows=100,
        workers=0,
    )
    assert read_output(out).column("id").to_pylist() == list(range(1000))
    assert read_output(out).equals(read_output(tmp_path / "clean"))
    manifest = json.loads((out / "_manifest.json").read_text())
    assert {p["sha256"] for p in manifest["partitions"]} == {r.sha256 for r in clean.results}
    engine.dispose()


def _recorded(project: Project) -> int:
    from conveyor.scoring.tables import ScoredPartitionRecord

    with project.store.read() as session:
        return int(session.query(ScoredPartitionRecord).count())
