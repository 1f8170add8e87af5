"""Fairness, regression suite, latency budget and data checks on crafted data."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from gate_support import Lookup, ids

from conveyor.checks import run_gates
from conveyor.config import SLOs
from conveyor.data.validation import validate
from conveyor.errors import InvalidInputError
from conveyor.training.gates import (
    GateContext,
    data_checks,
    fairness,
    latency_budget,
    metric_floor,
    regression_suite,
)

# -- fairness -------------------------------------------------------------------

# Groups A and B (200 rows each, half positive) and C (10 rows: too small to judge).
GROUPS = np.array(["A"] * 200 + ["B"] * 200 + ["C"] * 10)
Y = np.concatenate([np.tile([1.0, 0.0], 100), np.tile([1.0, 0.0], 100), np.tile([1.0, 0.0], 5)])


def _model(unfair_on_b: bool) -> Lookup:
    labels = Y.copy()
    labels[GROUPS == "C"] = 0  # wildly off, but C is too small to count
    if unfair_on_b:
        labels[GROUPS == "B"] = 1  # everyone in B is selected
    return Lookup(labels)


def _by_name(results: list[Any]) -> dict[str, Any]:
    return {r.name: r for r in results}


def test_fair_model_passes_and_the_small_group_is_a_warning() -> None:
    ctx = GateContext(_model(unfair_on_b=False), ids(len(Y)), Y, groups=GROUPS)
    checks = _by_name(fairness("accuracy", min_group_size=30)(ctx))
    assert checks["fairness.demographic_parity_difference"].passed
    assert checks["fairness.demographic_parity_difference"].observed["difference"] == 0
    assert checks["fairness.equalized_odds_difference"].observed["difference"] == 0
    size = checks["fairness.group_size"]
    assert not size.passed and size.severity == "warning"
    assert size.observed == {"C": 10} and "'C' (10 rows)" in size.detail
    report = run_gates("model:m", [fairness(min_group_size=30)], ctx)
    assert report.passed and report.verdict == "passed with warnings"


def test_model_unfair_on_a_planted_group_fails_with_known_gaps() -> None:
    ctx = GateContext(_model(unfair_on_b=True), ids(len(Y)), Y, groups=GROUPS)
    checks = _by_name(fairness("accuracy", min_group_size=30, max_metric_gap=0.1)(ctx))
    dp = checks["fairness.demographic_parity_difference"]
    eo = checks["fairness.equalized_odds_difference"]
    acc = checks["fairness.accuracy_by_group"]
    assert not dp.passed and dp.observed["difference"] == pytest.approx(0.5)
    assert dp.observed["by_group"] == {"A": 0.5, "B": 1.0}
    assert "highest in 'B', lowest in 'A'" in dp.detail and "over the limit 0.1" in dp.detail
    assert not eo.passed and eo.observed["fpr_gap"] == 1.0 and eo.observed["tpr_gap"] == 0.0
    assert "false positive rate" in eo.detail
    assert not acc.passed and acc.observed["by_group"] == {"A": 1.0, "B": 0.5}


def test_fairness_groups_from_a_column_and_bad_groups() -> None:
    frame = pd.DataFrame({"id": np.arange(len(Y)), "region": GROUPS})
    model = _model(unfair_on_b=True)
    ctx = GateContext(model, frame, Y, predict=lambda m, X: m.labels[X["id"].to_numpy()])
    assert not _by_name(fairness(groups="region")(ctx))[
        "fairness.demographic_parity_difference"
    ].passed
    with pytest.raises(InvalidInputError, match="'country'"):
        fairness(groups="country")(ctx)
    with pytest.raises(InvalidInputError, match="one label per row"):
        fairness(groups=GROUPS[:5])(ctx)
    one_group = fairness(min_group_size=300)(GateContext(model, ids(len(Y)), Y, groups=GROUPS))
    assert _by_name(one_group)["fairness.groups"].severity == "warning"


# -- regression suite -----------------------------------------------------------


class Doubler:
    """2x, off by a planted amount on some inputs; checks what it is given."""

    def __init__(self, offsets: dict[float, float]) -> None:
        self.offsets = offsets

    def predict(self, X: Any) -> Any:
        assert isinstance(X, pd.DataFrame) and list(X.columns) == ["x"]
        x = X["x"].to_numpy(dtype=float)
        return 2 * x + np.array([self.offsets.get(v, 0.0) for v in x])


EXAMPLES = pd.DataFrame(
    {
        "name": ["a", "b", "c", "d"],
        "x": [1.0, 2.0, 3.0, 4.0],
        "expected": [2.0, 4.0, 6.0, 8.0],
        "tolerance": [0.0, 0.5, None, 0.0],
    }
)


def test_regression_suite_names_the_failing_rows_and_honours_tolerances() -> None:
    gate = regression_suite(EXAMPLES, row_names="name")
    ok = gate(GateContext(Doubler({2.0: 0.4})))  # within row b's tolerance of 0.5
    assert ok.passed and "all 4 examples" in ok.detail
    bad = gate(GateContext(Doubler({2.0: 0.6, 4.0: 1.0})))
    assert not bad.passed and bad.observed == {"failed": 2, "rows": ["b", "d"]}
    assert "row b (expected" in bad.detail and "row d" in bad.detail
    by_position = regression_suite(EXAMPLES.drop(columns=["name"]))
    assert by_position(GateContext(Doubler({4.0: 1.0}))).observed["rows"] == ["3"]


def test_regression_suite_on_labels_and_bad_tables() -> None:
    table = pa.table({"x": [0, 1, 2], "expected": ["cat", "dog", "cat"]})
    names = np.array(["cat", "dog"])
    model = Lookup(np.zeros(3))
    check = regression_suite(table)(
        GateContext(model, predict=lambda m, X: names[X.column("x").to_numpy() % 2])
    )
    assert check.passed
    with pytest.raises(InvalidInputError, match="'expected'"):
        regression_suite(pa.table({"x": [1]}))
    with pytest.raises(InvalidInputError, match="'nope'"):
        regression_suite(table, features=["nope"])


# -- latency --------------------------------------------------------------------


def test_slow_predict_misses_the_budget_and_fast_one_meets_it() -> None:
    from threadpoolctl import threadpool_info

    threads: list[int] = []

    def slow(model: Any, X: Any) -> Any:
        time.sleep(0.02)  # slow on purpose: the latency gate is the behaviour under test
        return np.zeros(len(X))

    def fast(model: Any, X: Any) -> Any:
        threads.extend(pool["num_threads"] for pool in threadpool_info())
        return np.asarray(X)[:, 0] @ np.ones(1)

    X = ids(100)
    miss = latency_budget(5, n_rows=20, warmup=2)(GateContext(None, X, predict=slow))
    assert not miss.passed and miss.observed["p95_ms"] >= 20 and "over the budget" in miss.detail
    ctx = GateContext(None, X, predict=fast, slos=SLOs(latency_p95_ms=1000))
    meet = latency_budget(n_rows=20, warmup=2)(ctx)
    assert meet.passed and meet.threshold == 1000.0
    assert set(threads) <= {1}  # BLAS pools held to one thread while timing


def test_latency_budget_needs_a_budget() -> None:
    report = run_gates("model:m", [latency_budget(n_rows=20)], GateContext(None, ids(30)))
    assert not report.passed and "latency_p95_ms" in report.checks[0].detail
    with pytest.raises(InvalidInputError, match="p95_ms"):
        latency_budget(0)


# -- data checks and a whole report ---------------------------------------------


def test_data_checks_wrap_the_validation_report() -> None:
    table = pa.table({"amount": [1.0, None, 3.0]})
    result = validate(
        table,
        [{"kind": "not_null", "column": "amount"}, {"kind": "row_count", "min": 1}],
        subject="dataset:train",
    )
    checks = _by_name(data_checks(result)(GateContext(None)))
    assert not checks["data.amount.not_null"].passed and checks["data.row_count"].passed
    from_context = data_checks()(GateContext(None, training_validation=result.report))
    assert [c.name for c in from_context] == ["data.amount.not_null", "data.row_count"]
    with pytest.raises(InvalidInputError, match="training_validation"):
        data_checks()(GateContext(None))


def test_one_report_over_every_gate() -> None:
    ctx = GateContext(_model(unfair_on_b=True), ids(len(Y)), Y, groups=GROUPS)
    report = run_gates(
        "model:fraud",
        [metric_floor(metric_name="accuracy", floor=0.5), fairness(), latency_budget(1000)],
        ctx,
    )
    failed = {c.name for c in report.failures}
    assert failed == {
        "fairness.demographic_parity_difference",
        "fairness.equalized_odds_difference",
    }
    assert report.verdict == "failed"


def test_real_scikit_learn_models_through_the_default_predict_and_score() -> None:
    from sklearn.datasets import make_classification
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression

    from conveyor.training.gates import champion_comparison

    X, y = make_classification(n_samples=1500, n_features=8, n_informative=5, random_state=0)
    X_train, y_train, X_hold, y_hold = X[:1000], y[:1000], X[1000:], y[1000:]
    candidate = LogisticRegression().fit(X_train, y_train)
    champion = DummyClassifier(strategy="prior").fit(X_train, y_train)  # auc 0.5
    frame = pd.DataFrame(X_hold).rename(columns=str)
    ctx = GateContext(
        candidate,
        X_hold,
        y_hold,
        champion=champion,
        groups=np.where(frame["0"] > 0, "high", "low"),
    )
    report = run_gates(
        "model:clf",
        [
            metric_floor(metric_name="roc_auc", floor=0.8),
            champion_comparison("roc_auc", min_relative_change=0.2, require_significant=True),
            champion_comparison("log_loss", min_absolute_change=0.05),
            fairness(max_demographic_parity_difference=None, max_equalized_odds_difference=None),
            latency_budget(1000, n_rows=20),
        ],
        ctx,
    )
    assert report.passed, [c.detail for c in report.failures]
    auc = report.checks[1].observed
    assert auc["champion"] == pytest.approx(0.5) and auc["interval"]["low"] > 0.3


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow", "list"])
def test_latency_rows_keep_the_frame_kind(kind: str) -> None:
    import polars as pl

    data = {"a": list(range(50)), "b": [0.5] * 50}
    X: Any = {
        "pandas": pd.DataFrame(data),
        "polars": pl.DataFrame(data),
        "arrow": pa.table(data),
        "list": [[i, 0.5] for i in range(50)],
    }[kind]
    seen: list[int] = []

    def predict(model: Any, row: Any) -> Any:
        assert type(row) is type(X) and len(row) == 1
        seen.append(1)
        return [0]

    assert latency_budget(1000, n_rows=20, warmup=1)(GateContext(None, X, predict=predict)).passed
    assert len(seen) == 21


def test_non_numeric_truth_is_named() -> None:
    ctx = GateContext(Lookup(np.zeros(3)), ids(3), ["yes", "no", "yes"])
    with pytest.raises(InvalidInputError, match="holdout_y must be numbers"):
        metric_floor(metric_name="accuracy", floor=0.5)(ctx)
