"""``conveyor models ...`` on a real project folder (SQLite), in-process, plus one real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import joblib
import pytest
from registry_support import labels, training_frame
from typer.testing import CliRunner

from conveyor.cli.models import models_app
from conveyor.project import init_project


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from sklearn.linear_model import LogisticRegression

    root = tmp_path / "p"
    init_project(root, name="models-test")
    frame = training_frame()
    joblib.dump(LogisticRegression(max_iter=500).fit(frame, labels(frame)), root / "model.pkl")
    frame.to_csv(root / "train.csv", index=False)
    monkeypatch.chdir(root)
    for var in ("CONVEYOR_STORE", "CONVEYOR_ARTIFACTS", "CONVEYOR_EVENTS"):
        monkeypatch.delenv(var, raising=False)
    return root


def cli(project: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(models_app, [*args, "-C", str(project)])
    return result.exit_code, result.output


def as_json(project: Path, *args: str) -> object:
    code, out = cli(project, *args, "--json")
    assert code == 0, out
    return json.loads(out)


def test_register_list_show_alias_history_rollback(project: Path) -> None:
    v1 = as_json(
        project,
        "register", "churn", "--file", "model.pkl", "--signature-from", "train.csv",
        "--metric", "auc=0.91", "--param", "C=1.0", "--tag", "team=risk",
    )  # fmt: skip
    assert isinstance(v1, dict)
    assert v1["ref"] == "churn@1" and v1["flavor"] == "sklearn"
    assert v1["metrics"] == {"auc": 0.91} and v1["params"] == {"C": 1.0}
    assert [c["name"] for c in v1["signature"]["inputs"]] == ["age", "income", "score"]
    assert v1["compiled"]["kind"] == "linear-formula/1"  # a linear model: its formula too
    v2 = as_json(project, "register", "churn", "--object", "registry_support:Doubler")
    assert isinstance(v2, dict) and v2["flavor"] == "python" and v2["number"] == 2
    assert v2["compiled"] is None

    listed = as_json(project, "list", "churn", "--limit", "1")
    assert isinstance(listed, dict)
    assert [v["ref"] for v in listed["items"]] == ["churn@2"] and listed["next_cursor"]
    rest = as_json(project, "list", "--cursor", listed["next_cursor"])
    assert isinstance(rest, dict) and [v["ref"] for v in rest["items"]] == ["churn@1"]
    assert [v["ref"] for v in as_json(project, "list", "--tag", "team=risk")["items"]] == [  # type: ignore[index]
        "churn@1"
    ]

    code, out = cli(project, "alias", "churn", "champion", "1", "--reason", "first")
    assert code == 1 and "churn@1 has no gate report" in out  # champion is gated
    code, out = cli(project, "alias", "churn", "champion", "1", "--force", "--reason", "first")
    assert code == 0 and "churn@champion: (unset) -> churn@1" in out
    code, out = cli(project, "alias", "churn", "champion", "2", "--force")
    assert code == 1 and "reason" in out
    code, out = cli(project, "alias", "churn", "champion", "2", "--force", "--reason", "hotfix")
    assert code == 0 and "churn@1 -> churn@2" in out
    shown = as_json(project, "show", "churn@champion")
    assert isinstance(shown, dict) and shown["number"] == 2 and shown["aliases"] == ["champion"]

    code, out = cli(project, "rollback", "churn", "champion", "--reason", "latency")
    assert code == 0 and "churn@2 -> churn@1" in out
    history = as_json(project, "history", "churn", "champion")
    assert isinstance(history, dict) and history["next_cursor"] is None
    moves = history["items"]
    assert [(m["forced"], m["reason"]) for m in moves] == [
        (False, "rollback: latency"),
        (True, "hotfix"),
        (True, "first"),
    ]
    code, out = cli(project, "history", "churn")
    assert code == 0 and "hotfix" in out
    at = as_json(project, "history", "churn", "champion", "--at", "1970-01-01T00:00")
    assert isinstance(at, dict) and at["version"] is None
    code, out = cli(project, "show", "churn@1")
    assert code == 0 and "age:int64!" in out
    assert f"formula: linear-formula/1 {v1['compiled']['digest']}" in out


def test_bad_input_is_one_clear_line(project: Path) -> None:
    code, out = cli(project, "register", "churn")
    assert code == 1 and "--file" in out
    code, out = cli(project, "register", "churn", "--file", "missing.pkl")
    assert code == 1 and "missing.pkl" in out
    (project / "junk.pkl").write_bytes(b"not a pickle")
    code, out = cli(project, "register", "churn", "--file", "junk.pkl")
    assert code == 1 and "junk.pkl" in out
    code, out = cli(project, "register", "churn", "--object", "registry_support:Nope")
    assert code == 1 and "Nope" in out
    code, out = cli(project, "register", "churn", "--file", "model.pkl", "--metric", "auc=high")
    assert code == 1 and "auc" in out
    code, out = cli(project, "show", "churn@3")
    assert code == 1 and "churn@3" in out
    assert as_json(project, "list") == {"items": [], "next_cursor": None}


def test_the_installed_command_lists_models(project: Path) -> None:
    conveyor = str(Path(sys.executable).with_name("conveyor"))
    run = subprocess.run(
        [conveyor, "models", "register", "churn", "--file", "model.pkl", "-C", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = subprocess.run(
        [conveyor, "models", "list", "-C", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "churn@1" in out and "sklearn" in out


def test_compile_records_the_formula_of_a_version_registered_without_one(project: Path) -> None:
    import sqlalchemy as sa

    from conveyor.project import Project
    from conveyor.registry.tables import ModelVersionRecord

    v1 = as_json(
        project, "register", "churn", "--file", "model.pkl", "--signature-from", "train.csv"
    )
    assert isinstance(v1, dict) and v1["compiled"] is not None
    as_json(project, "register", "churn", "--object", "registry_support:Doubler")
    with Project.open(project, env={}) as proj:  # as a version registered before formulas
        with proj.store.session() as session:
            session.execute(sa.update(ModelVersionRecord).values(compiled=None))
        assert proj.registry.get("churn", 1).compiled is None

    done = as_json(project, "compile", "churn@1")
    assert isinstance(done, dict) and done["already_recorded"] is False
    assert done["compiled"] == v1["compiled"]  # the same formula, the same bytes
    again = as_json(project, "compile", "churn@1")
    assert isinstance(again, dict) and again["already_recorded"] is True
    code, out = cli(project, "compile", "churn@2")
    assert code == 1 and "churn@2 has no formula to record" in out
    code, out = cli(project, "compile", "churn@9")
    assert code == 1 and "churn@9" in out
    with Project.open(project, env={}) as proj:
        events = list(proj.events.query(kind="model.compiled"))
        assert [(e.subject, e.subject_version, e.payload["digest"]) for e in events] == [
            ("churn", "1", v1["compiled"]["digest"])
        ]
        from conveyor.serving.pool import load_compiled

        assert load_compiled(proj.registry, "churn", 1) is not None  # servers answer from it
