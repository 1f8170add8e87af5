"""Metric floor, champion comparison (MLflow MetricThreshold semantics) and the bootstrap."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gate_support import Lookup, ids, right_on_first
from sklearn import metrics as skm

from conveyor.checks import run_gates
from conveyor.config import QualitySLO, SLOs
from conveyor.errors import InvalidInputError
from conveyor.training.gates import (
    METRICS,
    GateContext,
    bootstrap_difference,
    champion_comparison,
    metric,
    metric_floor,
)

N = 1000
ONES = np.ones(N)


def acc_ctx(candidate_right: int, champion_right: int | None) -> GateContext:
    champion = None if champion_right is None else right_on_first(champion_right)
    return GateContext(right_on_first(candidate_right), ids(N), ONES, champion=champion)


def rmse_ctx(candidate: float, champion: float | None) -> GateContext:
    """Truth all 0, constant predictions: the rmse is the constant."""
    champ = None if champion is None else Lookup(np.full(N, champion))
    return GateContext(Lookup(np.full(N, candidate)), ids(N), np.zeros(N), champion=champ)


# -- metrics ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("accuracy", skm.accuracy_score),
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1", skm.f1_score),
        ("roc_auc", skm.roc_auc_score),
        ("log_loss", skm.log_loss),
        ("rmse", lambda y, p: skm.mean_squared_error(y, p) ** 0.5),
        ("mse", skm.mean_squared_error),
        ("mae", skm.mean_absolute_error),
        ("r2", skm.r2_score),
    ],
)
def test_metrics_match_scikit_learn_one_by_one_and_batched(name: str, reference: Any) -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=(4, 300)).astype(float)
    m = METRICS[name]
    if m.needs == "score":
        p = np.clip(y * 0.3 + rng.random((4, 300)) * 0.7, 0.01, 0.99).round(2)  # ties too
    elif m.needs == "label":
        p = np.where(rng.random((4, 300)) < 0.8, y, 1 - y)
    else:
        p = y + rng.normal(0, 0.5, size=(4, 300))
    batched = m(y, p)
    expected = [reference(y[i], p[i]) for i in range(4)]
    np.testing.assert_allclose(batched, expected, rtol=1e-9)
    assert m(y[0], p[0]) == pytest.approx(expected[0], rel=1e-9)


def test_unknown_metric_is_named() -> None:
    with pytest.raises(InvalidInputError, match=r"'aucc'.*roc_auc"):
        metric("aucc")


# -- metric floor ---------------------------------------------------------------


def test_metric_floor_from_the_quality_slo() -> None:
    ctx = acc_ctx(900, None)
    ok = metric_floor(QualitySLO(metric="accuracy", floor=0.85))(ctx)
    bad = metric_floor(QualitySLO(metric="accuracy", floor=0.95))(ctx)
    assert ok.passed and ok.observed == pytest.approx(0.9)
    assert not bad.passed
    assert "0.9" in bad.detail and "misses the floor >= 0.95" in bad.detail


def test_metric_floor_lower_is_better_and_from_context_slos() -> None:
    slos = SLOs(quality=QualitySLO(metric="rmse", floor=0.5, direction="minimize"))
    ctx = rmse_ctx(0.4, None)
    ctx.slos = slos
    assert metric_floor()(ctx).passed
    assert not metric_floor(metric_name="rmse", floor=0.3)(ctx).passed  # rmse minimizes
    report = run_gates("model:m", [metric_floor()], rmse_ctx(0.4, None))  # no SLO anywhere
    assert not report.passed and "slos.quality" in report.checks[0].detail


def test_metric_floor_reads_scores_for_roc_auc() -> None:
    y = np.array([0, 0, 1, 1] * 50, dtype=float)
    scores = np.array([0.1, 0.6, 0.4, 0.9] * 50)  # 3 of 4 pairs ordered right: auc 0.75
    ctx = GateContext(Lookup(np.zeros(200), scores), ids(200), y)
    check = metric_floor(metric_name="roc_auc", floor=0.7)(ctx)
    assert check.passed and check.observed == pytest.approx(0.75)


# -- champion comparison: MLflow semantics ------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "champion", "kwargs", "passed"),
    [
        # absolute only: candidate >= champion + min_absolute_change
        (860, 800, {"min_absolute_change": 0.05}, True),
        (840, 800, {"min_absolute_change": 0.05}, False),
        # relative only: (candidate - champion) / champion >= min_relative_change
        (850, 800, {"min_relative_change": 0.05}, True),  # +6.25%
        (830, 800, {"min_relative_change": 0.05}, False),  # +3.75%
        # both must pass: the absolute passes, the relative does not
        (850, 800, {"min_absolute_change": 0.01, "min_relative_change": 0.10}, False),
        (850, 800, {"min_absolute_change": 0.01, "min_relative_change": 0.05}, True),
        # the value threshold combines with them too
        (850, 800, {"min_absolute_change": 0.01, "threshold": 0.9}, False),
        # champion at 0: relative falls back to strictly better
        (1, 0, {"min_relative_change": 0.5}, True),
        (0, 0, {"min_relative_change": 0.5}, False),
        # greater_is_better=False flips every comparison
        (700, 800, {"min_absolute_change": 0.05, "greater_is_better": False}, True),
        (780, 800, {"min_absolute_change": 0.05, "greater_is_better": False}, False),
    ],
)
def test_champion_comparison_accuracy_cases(
    candidate: int, champion: int, kwargs: dict[str, Any], passed: bool
) -> None:
    check = champion_comparison("accuracy", n_resamples=100, **kwargs)(acc_ctx(candidate, champion))
    assert check.passed is passed, check.detail
    assert check.observed["candidate"] == pytest.approx(candidate / N)
    assert check.observed["champion"] == pytest.approx(champion / N)
    assert ("missed" in check.detail) is (not passed)


@pytest.mark.parametrize(
    ("candidate", "champion", "kwargs", "passed"),
    [
        (0.8, 1.0, {"min_absolute_change": 0.1}, True),  # 0.8 <= 1.0 - 0.1
        (0.95, 1.0, {"min_absolute_change": 0.1}, False),
        (0.85, 1.0, {"min_relative_change": 0.1}, True),  # (1.0 - 0.85) / 1.0 = 15%
        (0.95, 1.0, {"min_relative_change": 0.1}, False),
        (0.85, 1.0, {"threshold": 0.9}, True),  # a ceiling when lower is better
        (0.95, 1.0, {"threshold": 0.9}, False),
    ],
)
def test_champion_comparison_lower_is_better_by_default_for_rmse(
    candidate: float, champion: float, kwargs: dict[str, Any], passed: bool
) -> None:
    check = champion_comparison("rmse", n_resamples=100, **kwargs)(rmse_ctx(candidate, champion))
    assert check.passed is passed, check.detail
    assert check.threshold["greater_is_better"] is False


def test_without_a_champion_change_thresholds_fail_as_a_missing_baseline() -> None:
    gate = champion_comparison("accuracy", min_absolute_change=0.01)
    check = gate(acc_ctx(900, None))
    assert not check.passed and check.severity == "error"
    assert "no champion" in check.detail
    # A first model: the missing champion can be a warning instead.
    warn = champion_comparison("accuracy", min_absolute_change=0.01, no_champion="warn")
    report = run_gates("model:m", [warn], acc_ctx(900, None))
    assert report.passed and report.warnings
    # ...but a missed value threshold stays an error.
    both = champion_comparison(
        "accuracy", min_absolute_change=0.01, threshold=0.95, no_champion="warn"
    )
    assert both(acc_ctx(900, None)).severity == "error"
    # A value threshold alone needs no champion.
    assert champion_comparison("accuracy", threshold=0.85)(acc_ctx(900, None)).passed


def test_champion_comparison_refuses_bad_thresholds() -> None:
    with pytest.raises(InvalidInputError, match="threshold"):
        champion_comparison("accuracy")
    with pytest.raises(InvalidInputError, match="min_relative_change"):
        champion_comparison("accuracy", min_relative_change=5)
    with pytest.raises(InvalidInputError, match="min_absolute_change"):
        champion_comparison("accuracy", min_absolute_change=-0.1)
    with pytest.raises(InvalidInputError, match="positive"):
        champion_comparison("accuracy", min_absolute_change=0)


# -- bootstrap ------------------------------------------------------------------


def _correctness_models(n: int, p_candidate: float, p_champion: float, seed: int) -> GateContext:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    cand = np.where(rng.random(n) < p_candidate, y, 1 - y)
    champ = np.where(rng.random(n) < p_champion, y, 1 - y)
    return GateContext(Lookup(cand), ids(n), y, champion=Lookup(champ))


def test_a_better_model_by_a_known_margin_passes_with_an_interval_above_zero() -> None:
    ctx = _correctness_models(4000, 0.90, 0.80, seed=1)
    gate = champion_comparison(
        "accuracy", min_absolute_change=0.05, require_significant=True, seed=5
    )
    check = gate(ctx)
    interval = check.observed["interval"]
    assert check.passed, check.detail
    assert interval["low"] > 0 and interval["low"] < check.observed["difference"] < interval["high"]
    assert "95% paired bootstrap interval" in check.detail
    # No real difference: the interval includes 0 and require_significant fails.
    same = champion_comparison("accuracy", threshold=0.0, require_significant=True)
    assert not same(_correctness_models(1000, 0.8, 0.8, seed=2)).passed


def test_bootstrap_interval_covers_the_true_difference_in_seeded_simulations() -> None:
    true_difference = 0.85 - 0.80
    covered = 0
    runs = 40
    for sim in range(runs):
        ctx = _correctness_models(400, 0.85, 0.80, seed=100 + sim)
        interval = bootstrap_difference(
            "accuracy",
            ctx.y(),
            ctx.predictions("model"),
            ctx.predictions("champion"),
            n_resamples=400,
            confidence=0.9,
            seed=sim,
        )
        covered += interval.low <= true_difference <= interval.high
    assert covered / runs >= 0.8  # nominal 90%


def test_bootstrap_is_seeded_and_paired() -> None:
    ctx = _correctness_models(500, 0.8, 0.7, seed=3)
    y, a, b = ctx.y(), ctx.predictions("model"), ctx.predictions("champion")
    first = bootstrap_difference("accuracy", y, a, b, seed=9, n_resamples=200)
    assert first == bootstrap_difference("accuracy", y, a, b, seed=9, n_resamples=200)
    # Paired: a model compared with itself has an interval of exactly zero width.
    self_cmp = bootstrap_difference("accuracy", y, a, a, seed=9, n_resamples=200)
    assert (self_cmp.low, self_cmp.high) == (0.0, 0.0)
    with pytest.raises(InvalidInputError, match="predictions"):
        bootstrap_difference("accuracy", y, a[:10], b)


def _mlflow_grid() -> list[dict[str, Any]]:
    values = [0.0, 0.5, 0.8, 0.85, 0.9, 0.95, 1.0, 1.2]
    cases = []
    for cand, base, thr, mabs, mrel, gib in itertools.product(
        values,
        [None, 0.0, 0.8, 1.0],
        [None, 0.85],
        [None, 0.0, 0.05, 0.2],
        [None, 0.0, 0.05, 0.25],
        [True, False],
    ):
        if thr is None and mabs is None and mrel is None:
            continue
        cases.append(
            {"cand": cand, "base": base, "thr": thr, "mabs": mabs, "mrel": mrel, "gib": gib}
        )
    return cases


class _Const:
    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, X: Any) -> Any:
        return np.full(len(X), self.value)


def test_champion_comparison_agrees_with_mlflow_on_a_grid() -> None:
    """Every case of a 1,984-case grid decided as MLflow 3.17.2 decided it (file alongside)."""
    lines = (Path(__file__).parent / "mlflow_outcomes.txt").read_text().splitlines()
    expected = "".join(line for line in lines if not line.startswith("#"))
    cases = _mlflow_grid()
    assert len(expected) == len(cases)
    one_row, zero = np.zeros((1, 1)), np.zeros(1)  # mae of one row is the constant, exactly
    disagreements = []
    for case, want in zip(cases, expected, strict=True):
        try:
            gate = champion_comparison(
                "mae",
                threshold=case["thr"],
                min_absolute_change=case["mabs"],
                min_relative_change=case["mrel"],
                greater_is_better=case["gib"],
                n_resamples=10,
            )
        except InvalidInputError:
            got = "i"
        else:
            champion = None if case["base"] is None else _Const(case["base"])
            ctx = GateContext(_Const(case["cand"]), one_row, zero, champion=champion)
            got = "p" if gate(ctx).passed else "f"
        # Where MLflow crashes (a zero relative change and no baseline) we fail instead.
        if got != want and not (want == "e" and got == "f"):
            disagreements.append((case, want, got))
    assert disagreements == []


@pytest.mark.parametrize("name", sorted(n for n, m in METRICS.items() if "ranking" not in m.tasks))
def test_count_weighted_resamples_score_like_copied_rows(name: str) -> None:
    import dataclasses

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300).astype(float)
    a = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1).round(2)  # with ties
    b = np.clip(y * 0.2 + rng.random(300) * 0.8, 0, 1).round(2)
    m = METRICS[name]
    if m.needs == "label":
        a, b = a.round(), b.round()
    fast = bootstrap_difference(m, y, a, b, n_resamples=200, seed=1)
    # The same metric without its count-weighted form takes the path that copies the rows.
    slow = bootstrap_difference(
        dataclasses.replace(m, weighted=None), y, a, b, n_resamples=200, seed=1
    )
    assert fast.low == pytest.approx(slow.low, rel=1e-9, abs=1e-9)  # mape: y = 0 is huge
    assert fast.high == pytest.approx(slow.high, rel=1e-9, abs=1e-9)


def test_a_ranking_metric_is_not_bootstrapped_by_rows() -> None:
    y = np.ones(20)
    with pytest.raises(InvalidInputError, match="scores queries, not rows"):
        bootstrap_difference(METRICS["ndcg"], y, y, y, n_resamples=20, seed=1)
