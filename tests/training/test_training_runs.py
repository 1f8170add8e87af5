"""Training runs on a real project (each metadata store, file artifacts, SQLite event log)."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import conveyor
from conveyor.data.lineage import lineage_of_run
from conveyor.data.versions import DatasetRepository
from conveyor.errors import ClosedError, InvalidInputError, NotFoundError
from conveyor.project import Project, init_project
from conveyor.training.provenance import git_state
from conveyor.training.runs import TrainingRun
from fresh_python import loaded_of


@pytest.fixture
def project(store_url: str, tmp_path: Path) -> Iterator[Project]:
    """A project on each metadata store of the backend matrix."""
    init_project(tmp_path / "proj", name="runs-test")
    with Project.open(tmp_path / "proj", env={"CONVEYOR_STORE": store_url}) as proj:
        assert proj.store.engine.dialect.name == store_url.split(":", 1)[0]
        yield proj


def _events(project: Project, kind: str) -> list[dict]:  # type: ignore[type-arg]
    project.events.flush()
    return [dict(e.payload) for e in project.events.query(kind=kind, limit=100).items]


def test_run_records_params_metrics_artifacts_lineage_and_events(
    project: Project, tmp_path: Path
) -> None:
    import pyarrow as pa

    version = DatasetRepository(project.store, project.artifacts).commit(
        "transactions", pa.table({"amount": [1.0, 2.0, 3.0], "label": [0, 1, 0]})
    )
    model_file = tmp_path / "weights.bin"
    model_file.write_bytes(b"\x00weights\x01")

    with conveyor.run("fraud", params={"max_depth": 6}, seed=11, project=project) as run:
        used = run.use_dataset("transactions@1")
        run.use_dataset(version)  # the same version again: one link, one ref
        run.log_param("lr", 0.1)
        run.log_metric("loss", 0.9, step=0)
        run.log_metric("loss", 0.4, step=1)
        run.log_metrics({"auc": 0.91, "f1": 0.7})
        ref = run.log_artifact("model.bin", b"model bytes")
        file_ref = run.log_artifact("weights", model_file)
        first_draw = random.random()
        first_np = np.random.rand()

    assert used.id == version.id
    stored = project.store.runs.get(run.id)
    assert stored.status == "succeeded" and stored.ended_at is not None
    assert stored.kind == "train" and stored.name == "fraud" and stored.project == "runs-test"
    assert stored.params == {"max_depth": 6, "lr": 0.1}
    assert stored.metrics == {"loss": 0.4, "auc": 0.91, "f1": 0.7}
    assert stored.artifacts["model.bin"]["digest"] == ref.digest
    assert project.artifacts.get(file_ref.digest) == b"\x00weights\x01"
    assert stored.tags["seed"] == {"value": 11, "applied_to": ["random", "numpy"]}
    assert stored.tags["datasets"] == ["transactions@1"]
    env = stored.tags["environment"]
    assert env["python"].count(".") == 2 and "numpy" in env["libraries"]
    assert lineage_of_run(project.store, run.id).inputs == ((run.id, version.id),)

    # The seed was applied: the same seed draws the same numbers.
    random.seed(11)
    np.random.seed(11)
    assert (first_draw, first_np) == (random.random(), np.random.rand())

    started = _events(project, "run.started")
    finished = _events(project, "run.finished")
    steps = [(p["step"], p["metrics"]) for p in _events(project, "run.metric")]
    assert [p["run"] for p in started] == [run.id]
    assert finished[0]["status"] == "succeeded" and finished[0]["metrics"]["auc"] == 0.91
    assert steps[:2] == [(0, {"loss": 0.9}), (1, {"loss": 0.4})]


def test_a_raising_block_fails_the_run_and_reraises(project: Project) -> None:
    def train(run: TrainingRun) -> None:
        run.log_metric("loss", 1.0)
        raise ZeroDivisionError("division by zero")

    with pytest.raises(ZeroDivisionError), conveyor.run("fraud", project=project) as run:
        train(run)
    stored = project.store.runs.get(run.id)
    assert stored.status == "failed"
    assert stored.error is not None and "ZeroDivisionError" in stored.error
    assert _events(project, "run.finished")[0]["status"] == "failed"
    assert isinstance(stored.tags["seed"]["value"], int)  # drawn and recorded


def test_run_opens_the_project_from_a_path_and_closes_it(tmp_path: Path) -> None:
    init_project(tmp_path / "p2", name="by-path")
    with conveyor.run("churn", project=tmp_path / "p2", params={"k": 1}) as run:
        run.log_metric("acc", 0.5)
    with pytest.raises(ClosedError):
        run.log_metric("acc", 0.6)
    with Project.open(tmp_path / "p2") as proj:
        assert proj.store.runs.get(run.id).metrics == {"acc": 0.5}


def test_bad_input_is_refused_with_the_field_named(project: Project) -> None:
    with pytest.raises(InvalidInputError, match="seed"):
        TrainingRun("x", seed=-1, project=project)
    with pytest.raises(InvalidInputError, match="git"):
        TrainingRun("x", tags={"git": "mine"}, project=project)
    with pytest.raises(InvalidInputError, match="project"):
        conveyor.run("x", project=object()).__enter__()  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="params"):
        conveyor.run("x", params={"model": object()}, project=project).__enter__()
    assert project.store.runs.list(name="x").items == []  # nothing half-started
    with conveyor.run("x", project=project) as run:
        with pytest.raises(NotFoundError):
            run.use_dataset("nothing@3")
        with pytest.raises(InvalidInputError, match="not a file"):
            run.log_artifact("a", "/no/such/file")
        with pytest.raises(InvalidInputError, match="metric"):
            run.log_metric("loss", float("nan"))
    assert project.store.runs.get(run.id).status == "succeeded"


def test_git_state_inside_and_outside_a_repository(tmp_path: Path) -> None:
    assert git_state(tmp_path) is None
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
        "PATH": "/usr/bin:/bin",
    }
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "first"]):
        subprocess.run(["git", *args], cwd=repo, check=True, env=env)
    (repo / "f.txt").write_text("a")
    subprocess.run(["git", "add", "f.txt"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", "f"], cwd=repo, check=True, env=env)
    clean = git_state(repo)
    assert clean is not None and len(clean["commit"]) == 40 and clean["dirty"] is False
    (repo / "f.txt").write_text("b")
    assert git_state(repo) == {"commit": clean["commit"], "dirty": True}


def test_importing_runs_and_gates_loads_no_ml_library() -> None:
    code = "import conveyor, conveyor.training.runs, conveyor.training.gates; conveyor.run"
    heavy = ("numpy", "pyarrow", "pandas", "scipy", "duckdb", "sqlalchemy")
    assert loaded_of(heavy, code) == []


def test_run_validate_saves_a_report_linked_to_the_run(project: Project) -> None:
    from gate_support import ids, right_on_first

    from conveyor.checks.persist import get_report
    from conveyor.training.gates import GateContext, champion_comparison, metric_floor

    ctx = GateContext(right_on_first(900), ids(1000), np.ones(1000), champion=right_on_first(800))
    gates = [
        metric_floor(metric_name="accuracy", floor=0.95),
        champion_comparison("accuracy", min_absolute_change=0.05, n_resamples=100),
    ]
    with conveyor.run("fraud", project=project) as run:
        report = run.validate(gates, ctx, subject_version="7")
    assert [c.status for c in report.checks] == ["fail", "pass"]
    saved = get_report(project.store, report.id)
    assert saved.subject == "model:fraud" and saved.subject_version == "7"
    assert [c.name for c in saved.checks] == ["quality.accuracy", "champion.accuracy"]
    assert saved.checks[1].observed["interval"]["n_resamples"] == 100
    assert project.store.runs.get(run.id).metrics["gates_passed"] == 0.0
    validated = _events(project, "model.validated")
    assert validated[0]["failed"] == ["quality.accuracy"] and validated[0]["run"] == run.id


def test_a_failure_to_record_the_end_does_not_hide_the_blocks_error(tmp_path: Path) -> None:
    init_project(tmp_path / "p3", name="closing")
    proj = Project.open(tmp_path / "p3")
    run = conveyor.run("fraud", project=proj)

    def train() -> None:
        with run:
            proj.close()  # the store goes away mid-run: the run's end cannot be written
            raise ValueError("bad hyperparameter")

    with pytest.raises(ValueError, match="bad hyperparameter") as info:
        train()
    assert any("could not record the end" in note for note in info.value.__notes__)
