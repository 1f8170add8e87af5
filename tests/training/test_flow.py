"""conveyor train's flow: spec -> run -> hold-out -> register -> gates -> aliases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from training_support import SCALED_SGD, loans

from conveyor.checks import CheckResult, Gate
from conveyor.errors import GateFailedError, InvalidInputError, NotFoundError
from conveyor.project import Project, init_project
from conveyor.training.flow import (
    GATES,
    Prepared,
    evaluate_version,
    holdout_mask,
    train_candidate,
)
from conveyor.training.gates import GateContext

SPEC = """
slos:
  quality: {metric: roc_auc, floor: 0.75, direction: maximize}
  latency_p95_ms: 250
datasets:
  loans:
    expectations:
      - {kind: not_null, column: income}
models:
  risk:
    train: flow_trainer:fit
    dataset: loans
    features: [income, debt, age]
    target: default
    holdout: {by: hash, column: customer, fraction: 0.25}
    groups: region
    gates:
      - metric_floor: {}
      - champion_comparison: {metric: roc_auc, min_absolute_change: 0.001, no_champion: warn}
      - fairness: {metric: accuracy, min_group_size: 20, max_demographic_parity_difference: 0.5,
                   max_equalized_odds_difference: 0.5}
      - latency_budget: {n_rows: 20}
      - data_checks: {}
  online:
    train: flow_trainer:fit_sgd
    dataset: loans
    features: [income, debt, age]
    target: default
    holdout: {by: random, fraction: 0.2}
    gates:
      - metric_floor: {}
    auto_promote: true
    retrain: {incremental: true}
"""

TRAINER = (
    SCALED_SGD
    + """
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def fit(X, y, *, seed, sabotage=False, C=1.0):
    if sabotage:  # learns from shuffled labels: no signal left
        y = np.random.default_rng(seed).permutation(np.asarray(y))
    return make_pipeline(StandardScaler(), LogisticRegression(C=C)).fit(X, y)
"""
)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    init_project(tmp_path, name="flow")
    with (tmp_path / "conveyor.yaml").open("a") as f:
        f.write(SPEC)
    (tmp_path / "flow_trainer.py").write_text(TRAINER)
    with Project.open(tmp_path) as proj:
        yield proj


def test_candidates_are_judged_then_promoted_only_through_gates(project: Project) -> None:
    with pytest.raises(NotFoundError, match="conveyor data ingest loans"):
        train_candidate(project, "risk")
    project.data.ingest("loans", loans(2000, seed=1))

    first = train_candidate(project, "risk", seed=3, actor="ana")
    assert first.passed, first.report.failures
    assert first.version.number == 1 and first.challenger is not None and first.promotion is None
    assert first.version.metrics["holdout_roc_auc"] > 0.75
    assert first.version.metrics["holdout_rows"] + first.version.metrics["train_rows"] == 2000
    latest = project.data.versions.latest("loans")
    assert latest is not None and first.version.dataset_version_ids == [latest.id]
    assert first.version.run_id == first.run_id and first.version.signature is not None
    names = [c.name for c in first.report.checks]
    assert "quality.roc_auc" in names and "latency.p95_ms" in names, names
    assert any(n.startswith("data.") for n in names)
    project.registry.promote("risk", 1, actor="ana")

    bad = train_candidate(project, "risk", params={"sabotage": True}, seed=3, actor="bo")
    assert not bad.passed and bad.challenger is None
    failed = {c.name for c in bad.report.failures}
    assert "quality.roc_auc" in failed and "champion.roc_auc" in failed, failed
    assert project.registry.get("risk", "challenger").number == 1
    with pytest.raises(GateFailedError, match="risk@2 failed its gates"):
        project.registry.promote("risk", 2, actor="bo")
    assert bad.version.params == {"sabotage": True}

    again = evaluate_version(project, "risk@1")
    assert again.passed and project.registry.gate_report("risk@1").id == again.id  # type: ignore[union-attr]
    project.events.flush()
    candidates = project.events.query(kind="model.candidate", subject="risk").items
    assert [e.payload["report"] for e in candidates] == [first.report.id, bad.report.id]


def test_incremental_training_continues_the_champion_on_new_rows(project: Project) -> None:
    project.data.ingest("loans", loans(1500, seed=5))
    first = train_candidate(project, "online", seed=1)
    assert first.promotion is not None and not first.incremental  # auto_promote, from scratch

    project.data.ingest("loans", loans(500, seed=6, start=1500))
    second = train_candidate(project, "online", seed=1)
    assert second.incremental and second.version.parent_id == first.version.id
    assert second.version.tags["incremental"] == "true"
    champion = project.registry.load("online@1").model
    continued = project.registry.load("online@2").model
    assert not np.allclose(champion.coef_, continued.coef_)  # it learned from the new rows
    assert project.registry.get("online", "champion").number == 2


def test_spec_errors_name_the_gate(project: Project, tmp_path: Path) -> None:
    project.data.ingest("loans", loans(300, seed=1))
    text = (
        (tmp_path / "conveyor.yaml")
        .read_text()
        .replace("- metric_floor: {}\n    auto", "- metric_flor: {}\n    auto")
    )
    (tmp_path / "conveyor.yaml").write_text(text)
    with (
        Project.open(tmp_path) as proj,
        pytest.raises(InvalidInputError, match="unknown gate 'metric_flor'"),
    ):
        train_candidate(proj, "online")


def test_hash_holdout_keeps_an_entity_on_one_side() -> None:
    import pandas as pd

    from conveyor.training.settings import HoldoutSpec

    frame = pd.DataFrame({"k": [f"c{i % 50}" for i in range(1000)], "t": range(1000)})
    mask = holdout_mask(frame, HoldoutSpec(by="hash", column="k", fraction=0.3))
    by_key = pd.Series(mask).groupby(frame["k"]).nunique()
    assert (by_key == 1).all() and 0.1 < mask.mean() < 0.5
    timed = holdout_mask(frame, HoldoutSpec(by="time", column="t", fraction=0.2))
    assert frame["t"][timed].min() > frame["t"][~timed].max() and timed.sum() == 200


def _build_min_holdout_rows(options: dict[str, Any], *, prepared: Prepared, **_: Any) -> Gate:
    """A team's own gate: enough hold-out rows to judge by (options checked at build time)."""
    minimum = options.pop("min")
    if options:
        raise InvalidInputError(f"min_holdout_rows: unknown options {sorted(options)}")

    def min_holdout_rows(ctx: GateContext) -> CheckResult:
        n = len(ctx.y())
        return CheckResult("holdout.rows", n >= minimum, n, minimum, f"{n} hold-out rows")

    assert prepared.holdout.sum() > 0  # the builder sees the prepared data, as built-ins do
    return min_holdout_rows


def test_a_registered_gate_is_named_in_the_spec_and_judges_candidates(
    project: Project, tmp_path: Path
) -> None:
    project.data.ingest("loans", loans(600, seed=2))
    spec = tmp_path / "conveyor.yaml"
    spec.write_text(
        spec.read_text().replace(
            "- metric_floor: {}\n    auto",
            "- metric_floor: {}\n      - min_holdout_rows: {min: 100}\n    auto",
        )
    )
    GATES.register("min_holdout_rows", _build_min_holdout_rows)
    try:
        with Project.open(tmp_path) as proj:
            first = train_candidate(proj, "online", seed=1)
            check = next(c for c in first.report.checks if c.name == "holdout.rows")
            assert check.passed and check.observed == first.version.metrics["holdout_rows"]
            assert first.promotion is not None  # the custom gate passed with the others
        spec.write_text(spec.read_text().replace("{min: 100}", "{min: 100000}"))
        with Project.open(tmp_path) as proj:
            second = train_candidate(proj, "online", seed=1)
            assert {c.name for c in second.report.failures} == {"holdout.rows"}
            assert second.promotion is None and second.challenger is None
    finally:
        GATES.unregister("min_holdout_rows")
    with (
        Project.open(tmp_path) as proj,
        pytest.raises(InvalidInputError, match="unknown gate 'min_holdout_rows'; known: "),
    ):
        train_candidate(proj, "online")
