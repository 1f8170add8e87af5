"""The report policy: one drifted important column fails the report and emits
``drift.detected``; where the important columns come from (argument, a model's
importances, the spec); the judgment each column check carries; the CLI's table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from conveyor.data.drift import DriftDetector
from conveyor.data.drift.importance import (
    IMPORTANCE_TAG,
    importances_of,
    important_features,
    registered_importances,
)
from conveyor.errors import InvalidInputError
from conveyor.project import Project, init_project

ROWS = 20_000


def _quantiles(n: int, shift: float = 0.0) -> np.ndarray:
    """A normal sample without sampling noise: its quantiles, so every number is fixed."""
    return np.asarray(sps.norm.ppf((np.arange(n) + 0.5) / n) + shift)


def _frames(n: int = ROWS) -> tuple[pa.Table, pa.Table]:
    """Four columns: ``income`` moves 0.3 sd (drift), ``debt`` moves 0.063 sd (a KS
    distance of 0.025: significant at 20,000 rows, but too close to the 0.02 floor to
    be shown above it), ``age`` and ``region`` do not move."""
    region = np.array(["n", "s", "e", "w"])[np.arange(n) % 4]
    base = {"age": _quantiles(n) * 10 + 40, "region": region}
    ref = pa.table({"income": _quantiles(n), "debt": _quantiles(n), **base})
    cur = pa.table({"income": _quantiles(n, 0.3), "debt": _quantiles(n, 0.0627), **base})
    return ref, cur


# -- the detector and its report ----------------------------------------------------


def test_an_important_column_that_drifts_fails_the_report_alone() -> None:
    ref, cur = _frames()
    plain = DriftDetector().fit(ref).score(cur)
    assert plain.drifted_columns == ["income"] and not plain.dataset_drift  # 1 of 4
    assert plain.to_report("dataset:t").passed and not plain.alarm

    result = DriftDetector(important=["income", "age"]).fit(ref).score(cur)
    assert result.important_drifted == ["income"] and result.alarm
    report = result.to_report("dataset:t")
    assert not report.passed and [c.name for c in report.failures] == ["drift.column.income"]
    income = next(c for c in report.checks if c.name == "drift.column.income")
    assert income.severity == "error" and income.observed["important"] is True
    assert "important columns drifted: income" in report.checks[0].detail
    # An important column that does not drift passes; an unimportant one is a warning.
    age = next(c for c in report.checks if c.name == "drift.column.age")
    assert age.passed and age.observed["judgment"] == "no_drift"


def test_significant_but_below_the_floor_is_its_own_judgment_in_the_check() -> None:
    ref, cur = _frames()
    result = DriftDetector().fit(ref).score(cur)
    debt = result["debt"]
    assert debt.p_value_adjusted is not None and debt.p_value_adjusted < 1e-3  # significant
    assert debt.effect_size is not None and debt.effect_size >= 0.02  # estimated above...
    assert debt.effect_size_lower is not None and debt.effect_size_lower < 0.02  # ...not shown
    assert debt.judgment == "significant_below_floor" and debt.near_floor and not debt.drifted
    assert result.below_floor_columns == ["debt"]
    check = next(c for c in result.to_report("dataset:t").checks if c.name == "drift.column.debt")
    assert check.status == "warn" and check.observed["judgment"] == "significant_below_floor"
    assert check.observed["near_floor"] is True
    assert "near the floor" in check.detail and "not counted as drift" in check.detail
    back = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert back["columns"]["debt"]["judgment"] == "significant_below_floor"
    assert back["below_floor_columns"] == ["debt"] and back["alarm"] is False
    # With the floor off, significance alone decides.
    assert DriftDetector(effect_size_floor={"ks": 0}).fit(ref).score(cur)["debt"].drifted


def test_important_columns_must_be_compared_columns() -> None:
    ref, _ = _frames(100)
    with pytest.raises(InvalidInputError, match="'salary' are not compared") as info:
        DriftDetector(important=["income", "salary"]).fit(ref)
    assert info.value.context["field"] == "important"
    with pytest.raises(InvalidInputError) as info:
        DriftDetector(important="income").fit(ref)
    assert info.value.context["field"] == "important"


# -- where the important columns come from ---------------------------------------------


def test_important_features_are_the_fewest_making_half_the_importance_at_most_five() -> None:
    weights = {"a": 0.05, "b": 0.4, "c": 0.3, "d": 0.25}
    assert important_features(weights) == ["b", "c"]  # 0.4 + 0.3 >= half
    assert important_features(weights, share=0.99) == ["b", "c", "d", "a"]
    assert important_features(weights, share=1.0, top=2) == ["b", "c"]
    assert important_features(weights, among=["a", "d"]) == ["d"]
    assert important_features({"x": 0.0, "y": float("nan")}) == []


def test_importances_are_read_off_trees_linear_models_and_pipelines() -> None:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "income": rng.normal(size=n),
            "noise": rng.normal(size=n),
            "city": rng.choice(["ams", "ber"], size=n),
        }
    )
    y = (frame["income"] + 0.05 * rng.normal(size=n) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(
        frame[["income", "noise"]], y
    )
    found = importances_of(forest)
    assert found is not None and important_features(found) == ["income"]
    linear = LogisticRegression().fit(frame[["income", "noise"]].to_numpy(), y)
    by_signature = importances_of(linear, ["income", "noise"])  # no names of its own
    assert by_signature is not None and max(by_signature, key=by_signature.__getitem__) == "income"
    assert importances_of(linear) is None  # no names at all: unknown, not guessed

    columns = ColumnTransformer(
        [("num", StandardScaler(), ["income", "noise"]), ("cat", OneHotEncoder(), ["city"])]
    )
    pipeline = make_pipeline(columns, LogisticRegression()).fit(frame, y)
    mapped = importances_of(pipeline)
    assert mapped is not None and set(mapped) == {"income", "noise", "city"}  # summed back
    assert important_features(mapped) == ["income"]


def test_a_registered_version_tag_wins_over_the_model() -> None:
    class Version:
        tags = {IMPORTANCE_TAG: {"debt": 3, "income": 1}}
        signature = None

    def never() -> None:
        raise AssertionError("the model is not loaded when the tag is there")

    assert registered_importances(Version(), load=never) == {"debt": 3.0, "income": 1.0}
    Version.tags = {IMPORTANCE_TAG: ["debt"]}  # type: ignore[dict-item]
    with pytest.raises(InvalidInputError, match="must map feature names to numbers"):
        registered_importances(Version())


# -- through the data layer, the event log and the CLI ----------------------------------

SPEC = """
datasets:
  loans:
    drift: {important: [income]}
  plain: {}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    init_project(tmp_path, name="t")
    with (tmp_path / "conveyor.yaml").open("a") as f:
        f.write(SPEC)
    for var in ("CONVEYOR_STORE", "CONVEYOR_ARTIFACTS", "CONVEYOR_EVENTS"):
        monkeypatch.delenv(var, raising=False)
    with Project.open(tmp_path) as proj:
        ref, cur = _frames()
        for name in ("loans", "plain"):
            proj.data.ingest(name, ref, mode="replace")
            proj.data.ingest(name, cur, mode="replace")
        yield proj


def _detected(project: Project) -> list[Any]:
    return [e.payload for e in project.events.query(kind="drift.detected").items]


def test_the_spec_marks_columns_important_and_one_drifted_column_emits_drift_detected(
    project: Project,
) -> None:
    loans = project.data.drift("loans@1", "loans@2")
    assert loans.important == {"columns": ["income"], "source": "spec"}
    assert not loans.report.passed and not loans.result.dataset_drift
    (event,) = _detected(project)
    assert event["drifted"] == ["drift.column.income"]
    assert "important columns (spec): income" in loans.describe()

    plain = project.data.drift("plain@1", "plain@2")  # nothing important: a warning only
    assert plain.important == {"columns": [], "source": None}
    assert plain.report.passed and plain.report.verdict == "passed with warnings"
    assert len(_detected(project)) == 1
    # The argument wins over the spec; a model's importances choose among compared columns.
    assert project.data.drift("loans@1", "loans@2", important=["age"]).report.passed
    chosen = project.data.drift(
        "plain@1", "plain@2", feature_importance={"income": 5, "score": 9, "age": 1}
    )
    assert chosen.important == {"columns": ["income"], "source": "model"}
    assert not chosen.report.passed
    with pytest.raises(InvalidInputError, match="'salary' are not compared"):
        project.data.drift("loans@1", "loans@2", important=["salary"])


def test_the_cli_shows_each_judgment_and_takes_a_model_for_its_important_features(
    project: Project,
) -> None:
    from sklearn.ensemble import RandomForestRegressor

    from conveyor.cli.data import data_app

    ref, _ = _frames(2_000)
    frame = ref.select(["income", "debt", "age"]).to_pandas()
    forest = RandomForestRegressor(n_estimators=5, random_state=0)
    forest.fit(frame, frame["income"] * 3 + frame["age"] * 0.01)
    project.registry.register("risk", forest, signature_from=frame)
    root = str(project.root)

    table = CliRunner().invoke(data_app, ["drift", "plain@1", "plain@2", "-C", root])
    assert table.exit_code == 0, table.output  # warnings only
    for text in ("judgment", "drift", "significant, near floor", "no drift"):
        assert text in table.output, table.output

    by_model = CliRunner().invoke(
        data_app, ["drift", "plain@1", "plain@2", "--model", "risk", "--json", "-C", root]
    )
    assert by_model.exit_code == 3, by_model.output  # income is the model's main feature
    body = json.loads(by_model.output)
    assert body["important"] == {"columns": ["income"], "source": "model"}
    assert body["drift"]["important_drifted"] == ["income"]
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["drift.column.income"]["severity"] == "error"
    assert checks["drift.column.debt"]["observed"]["judgment"] == "significant_below_floor"
