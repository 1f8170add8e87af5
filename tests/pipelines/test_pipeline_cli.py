"""``conveyor pipeline ...`` on a real project folder (SQLite), in-process and as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from conveyor.cli.pipeline import parse_params, pipeline_app
from conveyor.data.tables import DatasetRecord, DatasetVersionRecord
from conveyor.pipelines import history
from conveyor.project import Project, init_project
from conveyor.store.models import RunRecord
from conveyor.testing.wait import wait_until

FLOWS = textwrap.dedent(
    """
    from conveyor.pipelines import OnNewVersion, Pipeline

    demo = Pipeline("cli-demo")

    @demo.step(outputs="rows")
    def extract(ctx):
        for i in range(3):
            ctx.progress(i + 1, 3, f"batch {i + 1}")
        return list(range(int(ctx.params.get("n", 2))))

    @demo.step(inputs="rows")
    def load(ctx, rows):
        ctx.log.info("loaded %d rows", len(rows))

    broken = Pipeline("cli-broken")

    @broken.step
    def explode(ctx):
        raise RuntimeError("disk full")

    arrivals = Pipeline("cli-arrivals", triggers=[OnNewVersion("clicks")])

    @arrivals.step
    def react(ctx):
        return None
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    init_project(root, name="cli-test")
    (root / "flows.py").write_text(FLOWS)
    return root


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(pipeline_app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_run_shows_each_step_and_records_the_run(project: Path) -> None:
    code, out = _invoke("run", f"{project}/flows.py:demo", "-C", str(project), "-p", "n=4")
    assert code == 0, out
    assert "cli-demo run" in out and "ok extract" in out and "ok load" in out
    assert "succeeded" in out
    with Project.open(project) as proj:
        [run] = history(proj.store, "cli-demo").items
        assert run.status == "succeeded" and run.params == {"n": 4}
        assert run.tags["steps"] == ["extract", "load"]
        assert proj.store.runs.get(run.id).project == "cli-test"


def test_a_failed_run_exits_1_with_its_error(project: Path) -> None:
    code, out = _invoke("run", f"{project}/flows.py:broken", "-C", str(project))
    assert code == 1
    assert "failed explode" in out
    assert "step 'explode' failed after 1 attempt: RuntimeError: disk full" in out
    code, out = _invoke("run", f"{project}/flows.py:broken", "-C", str(project), "--json")
    assert code == 1
    body = json.loads(out)
    assert body["status"] == "failed" and body["steps"][0]["name"] == "explode"


def test_list_history_and_recover(project: Path) -> None:
    flows = f"{project}/flows.py"
    code, out = _invoke("list", flows)
    assert code == 0, out
    assert "cli-demo" in out and "extract -> load" in out and "new_version:clicks" in out
    code, out = _invoke("list", flows, "--json")
    defined = json.loads(out)
    assert defined["next_cursor"] is None
    assert [p["name"] for p in defined["items"]] == ["cli-demo", "cli-broken", "cli-arrivals"]

    for n in (1, 2, 3):
        assert _invoke("run", f"{flows}:demo", "-C", str(project), "-p", f"n={n}")[0] == 0
    code, out = _invoke("list", "-C", str(project))
    assert code == 0 and out.count("cli-demo") >= 3

    code, out = _invoke("history", "cli-demo", "-C", str(project), "--limit", "2", "--json")
    page = json.loads(out)
    assert [r["params"]["n"] for r in page["items"]] == [3, 2]
    code, out = _invoke(
        "history", "cli-demo", "-C", str(project), "--limit", "2", "--cursor", page["next_cursor"]
    )
    assert code == 0 and "extract:succeeded" in out

    code, out = _invoke("recover", "-C", str(project))
    assert code == 0 and "no crashed runs" in out
    with Project.open(project) as proj:
        dead = proj.store.runs.start("pipeline", "cli-demo")
        with proj.store.session() as session:
            session.execute(
                sa.update(RunRecord)
                .where(RunRecord.id == dead.id)
                .values(started_at=datetime.now(UTC) - timedelta(hours=2))
            )
    code, out = _invoke("recover", "-C", str(project), "--json", "--stale-after", "1h")
    assert code == 0
    [recovered] = json.loads(out)["items"]
    assert recovered["id"] == dead.id and recovered["status"] == "failed"


def test_bad_targets_and_params_are_one_clear_line(project: Path) -> None:
    code, out = _invoke("run", f"{project}/missing.py:demo", "-C", str(project))
    assert code == 1 and f"error: pipeline file {project}/missing.py does not exist" in out
    code, out = _invoke("run", f"{project}/flows.py:nothing", "-C", str(project))
    assert code == 1 and "has no attribute 'nothing'" in out and "demo" in out
    code, out = _invoke("run", f"{project}/flows.py", "-C", str(project))
    assert code == 1 and "defines several pipelines" in out
    code, out = _invoke("run", f"{project}/flows.py:demo", "-C", str(project), "-p", "oops")
    assert code == 1 and "--param 'oops': expected key=value" in out
    code, out = _invoke("recover", "-C", str(project), "--stale-after", "60")
    assert code == 1 and "--stale-after '60': expected a duration" in out
    (project / "bad.py").write_text("import not_a_module_anywhere\n")
    code, out = _invoke("list", f"{project}/bad.py")
    assert code == 1 and "importing" in out and "not_a_module_anywhere" in out


def test_params_parse_json_values_and_keep_text() -> None:
    assert parse_params(["n=3", "lr=0.5", "on=true", "day=2026-11-26", "tags=[1, 2]", "e="]) == {
        "n": 3,
        "lr": 0.5,
        "on": True,
        "day": "2026-11-26",
        "tags": [1, 2],
        "e": "",
    }


def test_schedule_serves_until_ctrl_c(project: Path) -> None:
    with Project.open(project) as proj, proj.store.session() as session:
        session.add(DatasetRecord(name="clicks", latest_number=1))
        session.flush()
        session.add(
            DatasetVersionRecord(
                id=uuid.uuid4().hex,
                dataset="clicks",
                number=1,
                content_hash="sha256:" + "2" * 64,
                row_count=1,
                schema={"columns": []},
                source={"kind": "test"},
                snapshot_digest="sha256:" + "3" * 64,
                snapshot_size=1,
            )
        )
    log = project / "schedule.log"
    code = "from conveyor.cli.pipeline import pipeline_app; pipeline_app()"
    args = ["schedule", "flows.py:arrivals", "-C", str(project), "--poll-interval", "0.05s"]
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=project,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "120"},
        )

    def succeeded() -> list[Any]:
        with Project.open(project) as proj:
            runs = history(proj.store, "cli-arrivals").items
        if runs and runs[0].status == "succeeded":
            return runs
        assert child.poll() is None, log.read_text()  # the scheduler serves until Ctrl-C
        return []

    try:
        runs = wait_until(
            succeeded,
            timeout=60,
            interval=0.05,
            message=lambda: f"the scheduled run to succeed; the scheduler said:\n{log.read_text()}",
        )
    finally:
        child.send_signal(signal.SIGINT)
        child.wait(30)
    text = log.read_text()
    assert child.returncode == 0, text
    assert "scheduling cli-arrivals" in text and "stopped" in text
    assert "cli-arrivals run" in text and "succeeded" in text
    assert len(runs) == 1
