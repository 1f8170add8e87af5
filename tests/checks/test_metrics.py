"""Every metric of the registry against scikit-learn's, on random and degenerate data.

Binary, multiclass and regression; one row at a time and batched over a
leading axis; with ties, one class present, constant predictions and string
labels. Where scikit-learn warns, raises or substitutes a convention for an
undefined value (roc_auc with one class, r2 of a constant truth), ours is NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from conveyor.checks.metrics import METRICS, Metric, metric, register
from conveyor.errors import InvalidInputError
from fresh_python import loaded_of

Data = tuple[Any, Any, dict[str, Any]]  # y, predictions, keyword arguments


def _sk(fn: Callable[..., float], *args: Any, **kwargs: Any) -> float:
    """scikit-learn's value; NaN where it raises or warns that the value is undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return float(fn(*args, **kwargs))
        except (ValueError, UndefinedMetricWarning):
            return float("nan")


def _binary(name: str, y: Any, p: Any, classes: Any = None) -> float:
    pos = 1 if classes is None else classes[1]
    labels = [0, 1] if classes is None else list(classes)
    return {
        "accuracy": lambda: _sk(skm.accuracy_score, y, p),
        "precision": lambda: _sk(skm.precision_score, y, p, pos_label=pos, zero_division=0),
        "recall": lambda: _sk(skm.recall_score, y, p, pos_label=pos, zero_division=0),
        "f1": lambda: _sk(skm.f1_score, y, p, pos_label=pos, zero_division=0),
        "roc_auc": lambda: _sk(skm.roc_auc_score, np.asarray(y) == pos, p),
        "log_loss": lambda: _sk(skm.log_loss, y, p, labels=labels),
        "brier": lambda: _sk(skm.brier_score_loss, y, p, pos_label=pos),
        "calibration_error": lambda: _ece(np.asarray(y) == pos, p),
    }[name]()


def _ece(hit: Any, confidence: Any, bins: int = 10) -> float:
    """Expected calibration error, written out: bins (0, .1], (.1, .2] ... (the first
    holds 0), each weighted by its share of rows."""
    hit, confidence = np.asarray(hit, float), np.asarray(confidence, float)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (confidence > lo) & (confidence <= hi) if b else confidence <= hi
        if b == bins - 1:
            inside |= confidence > 1
        if inside.any():
            total += inside.sum() / len(hit) * abs(hit[inside].mean() - confidence[inside].mean())
    return total


def _multiclass(name: str, y: Any, p: Any, classes: Any) -> float:
    return {
        "accuracy": lambda: _sk(skm.accuracy_score, y, p),
        "precision": lambda: _sk(skm.precision_score, y, p, average="macro", zero_division=0),
        "recall": lambda: _sk(skm.recall_score, y, p, average="macro", zero_division=0),
        "f1": lambda: _sk(skm.f1_score, y, p, average="macro", zero_division=0),
        "roc_auc": lambda: _sk(skm.roc_auc_score, y, p, multi_class="ovr", labels=classes),
        "log_loss": lambda: _sk(skm.log_loss, y, p, labels=classes),
        "brier": lambda: _sk(skm.brier_score_loss, y, p, labels=classes),
        "calibration_error": lambda: _ece(
            np.asarray(classes)[np.argmax(p, axis=1)] == np.asarray(y), np.max(p, axis=1)
        ),
    }[name]()


def _regression(name: str, y: Any, p: Any) -> float:
    if np.ptp(y) == 0 and name == "r2":
        return float("nan")  # undefined; scikit-learn says 1.0 or 0.0 by convention
    fns: dict[str, Callable[[], Any]] = {
        "rmse": lambda: skm.root_mean_squared_error(y, p),
        "mse": lambda: skm.mean_squared_error(y, p),
        "mae": lambda: skm.mean_absolute_error(y, p),
        "r2": lambda: skm.r2_score(y, p),
        "mape": lambda: skm.mean_absolute_percentage_error(y, p),
    }
    return float(fns[name]())


def _proba(rng: np.random.Generator, n: int, k: int, y: Any = None) -> Any:
    """Rows of probabilities summing to 1, informative about ``y`` when given, with ties."""
    raw = rng.random((n, k)).round(1) + 0.05
    if y is not None:
        raw[np.arange(n), y] += 0.6
    return raw / raw.sum(axis=1, keepdims=True)


def _close(got: Any, want: float, *, defined: bool = False) -> None:
    if defined:
        assert not np.isnan(want), "random data should give scikit-learn a defined value"
    if np.isnan(want):
        assert np.isnan(got), got
    else:
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


CLASSIFICATION = [
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "log_loss",
    "brier",
    "calibration_error",
]
REGRESSION = ["rmse", "mse", "mae", "r2", "mape"]
RANKING = ["ndcg", "map"]


def test_the_registry_covers_every_metric_with_its_direction_and_tasks() -> None:
    assert set(METRICS) == set(CLASSIFICATION) | set(REGRESSION) | set(RANKING)
    for name in CLASSIFICATION:
        assert METRICS[name].tasks == ("binary", "multiclass"), name
    for name in REGRESSION:
        assert METRICS[name].tasks == ("regression",), name
    for name in RANKING:
        assert METRICS[name].tasks == ("ranking",), name
    lower = {n for n, m in METRICS.items() if not m.greater_is_better}
    assert lower == {"log_loss", "brier", "calibration_error", "rmse", "mse", "mae", "mape"}
    assert metric("r2").direction == "maximize" and metric("mae").direction == "minimize"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", CLASSIFICATION)
def test_binary_metrics_match_scikit_learn(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y = rng.integers(0, 2, n)
    m = METRICS[name]
    if m.needs == "score":
        p = np.clip(y * 0.3 + rng.random(n) * 0.7, 0.0, 1.0).round(2)  # ties, and exact 0/1
    else:
        p = np.where(rng.random(n) < 0.8, y, 1 - y)
    _close(m(y, p), _binary(name, y, p), defined=True)
    # Labels that are not 0/1: the positive class is classes[1].
    words = np.array(["no", "yes"])
    _close(m(words[y], p if m.needs == "score" else words[p], classes=words), _binary(name, y, p))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", CLASSIFICATION)
def test_multiclass_metrics_match_scikit_learn(name: str, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n, k = int(rng.integers(10, 400)), int(rng.integers(3, 7))
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)  # every class present
    classes = list(range(k))
    m = METRICS[name]
    if m.needs == "score":
        p = _proba(rng, n, k, y)
    else:
        p = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    _close(m(y, p, classes=classes), _multiclass(name, y, p, classes), defined=True)
    # Classes that are strings, in the order of the score columns.
    names = np.array([f"c{i}" for i in range(k)])
    got = m(names[y], p if m.needs == "score" else names[p], classes=names)
    _close(got, _multiclass(name, names[y], p if m.needs == "score" else names[p], list(names)))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", REGRESSION)
def test_regression_metrics_match_scikit_learn(name: str, seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(2, 400))
    y = rng.normal(10, 3, n)
    p = y + rng.normal(0, 1.5, n)
    _close(METRICS[name](y, p), _regression(name, y, p), defined=True)


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_binary_edge_cases(name: str) -> None:
    m = METRICS[name]
    n = 50
    rng = np.random.default_rng(7)
    cases = {
        "one class, varied predictions": (np.ones(n, int), rng.integers(0, 2, n)),
        "no positive at all": (np.zeros(n, int), np.zeros(n, int)),
        "constant predictions": (rng.integers(0, 2, n), np.ones(n, int)),
        "perfect": (np.tile([0, 1], n // 2), np.tile([0, 1], n // 2)),
    }
    for case, (y, labels) in cases.items():
        p = np.full(n, 0.5) if case == "constant predictions" else labels * 0.9 + 0.05
        if m.needs == "label":
            p = labels
        got, want = m(y, p), _binary(name, y, p)
        if np.isnan(want):
            assert np.isnan(got), (case, got)
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), case


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_multiclass_edge_cases(name: str) -> None:
    m = METRICS[name]
    rng = np.random.default_rng(8)
    n, classes = 60, [0, 1, 2]
    for case, y in {
        "a class absent from y": rng.integers(0, 2, n),
        "one class only": np.full(n, 2),
    }.items():
        p = np.full((n, 3), 1 / 3) if m.needs == "score" else np.full(n, 1)  # constant
        got = m(y, p, classes=classes)
        want = _multiclass(name, y, p, classes)
        if np.isnan(want) or (name == "roc_auc"):
            # One-vs-rest needs every class in y: undefined otherwise.
            assert np.isnan(got), (case, got)
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), case


@pytest.mark.parametrize("name", REGRESSION)
def test_regression_edge_cases(name: str) -> None:
    m = METRICS[name]
    for y, p in (
        (np.full(20, 3.0), np.full(20, 3.0)),  # constant and perfect
        (np.full(20, 3.0), np.arange(20.0)),  # constant truth
        (np.arange(20.0), np.full(20, 9.5)),  # constant predictions
    ):
        _close(m(y, p), _regression(name, y, p))


@pytest.mark.parametrize("name", [*CLASSIFICATION, *REGRESSION])
def test_a_leading_axis_scores_each_resample(name: str) -> None:
    rng = np.random.default_rng(9)
    m = METRICS[name]
    b, n, k = 4, 120, 4
    if "regression" in m.tasks:
        y = rng.normal(size=(b, n))
        p = y + rng.normal(size=(b, n))
        want = [_regression(name, y[i], p[i]) for i in range(b)]
        np.testing.assert_allclose(m(y, p), want, rtol=1e-9)
        return
    y2 = rng.integers(0, 2, (b, n))
    p2 = np.clip(y2 * 0.4 + rng.random((b, n)) * 0.6, 0, 1) if m.needs == "score" else y2[::-1]
    np.testing.assert_allclose(m(y2, p2), [_binary(name, y2[i], p2[i]) for i in range(b)])
    yk = rng.integers(0, k, (b, n))
    yk[:, :k] = np.arange(k)
    if m.needs == "score":
        pk = np.stack([_proba(rng, n, k, yk[i]) for i in range(b)])
    else:
        pk = np.where(rng.random((b, n)) < 0.5, yk, rng.integers(0, k, (b, n)))
    classes = list(range(k))
    want = [_multiclass(name, yk[i], pk[i], classes) for i in range(b)]
    np.testing.assert_allclose(m(yk, pk, classes=classes), want, rtol=1e-9)


def test_tasks_are_inferred_or_refused() -> None:
    y = np.array([0, 1, 2, 2, 1, 0])
    p = np.array([0, 1, 1, 2, 1, 0])
    assert metric("f1").task_of(y, p) == "multiclass"
    assert metric("f1").task_of(y % 2, p % 2) == "binary"
    assert metric("roc_auc").task_of(y, _proba(np.random.default_rng(0), 6, 3)) == "multiclass"
    assert metric("roc_auc").task_of(y % 2, np.full((6, 2), 0.5)) == "binary"
    assert metric("roc_auc")(y % 2, np.column_stack([1 - y % 2, y % 2])) == 1.0
    with pytest.raises(InvalidInputError, match="'rmse' does not apply to binary tasks"):
        metric("rmse")(y, p, task="binary")
    with pytest.raises(InvalidInputError, match="'r2' does not apply to multiclass"):
        metric("r2").check_task("multiclass")
    with pytest.raises(InvalidInputError, match="not one of the classes"):
        metric("log_loss")(np.array([0, 5]), np.full((2, 3), 1 / 3), classes=[0, 1, 2])
    with pytest.raises(InvalidInputError, match="3 classes for scores with 2 columns"):
        metric("log_loss")(
            np.array([0, 1]), np.full((2, 2), 0.5), classes=[0, 1, 2], task="multiclass"
        )
    with pytest.raises(InvalidInputError, match=r"unknown metric 'aucc'; known: .*roc_auc"):
        metric("aucc")


def test_a_registered_metric_is_named_like_a_built_in() -> None:
    def top_share(y: Any, p: Any) -> Any:  # share of rows where the true class scores >= 0.5
        chosen = np.take_along_axis(p, y[..., None], axis=-1)[..., 0]
        return np.mean(chosen >= 0.5, axis=-1)

    custom = Metric("confident_hit_rate", "score", True, multiclass=top_share)
    register(custom)
    try:
        assert metric("confident_hit_rate") is custom and custom.tasks == ("multiclass",)
        proba = np.array([[0.6, 0.2, 0.2], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4]])
        assert custom(np.array(["a", "c", "a"]), proba, classes=["a", "b", "c"]) == 2 / 3
        with pytest.raises(InvalidInputError, match="already registered"):
            register(custom)
        register(custom, clobber=True)
        with pytest.raises(InvalidInputError, match="whose name is 'other'"):
            METRICS.register("other", custom)
    finally:
        METRICS.unregister("confident_hit_rate")
    with pytest.raises(InvalidInputError, match="no function for any task"):
        Metric("nothing", "label", True)
    with pytest.raises(InvalidInputError, match="needs is 'label', 'score' or 'value'"):
        Metric("odd", "proba", True, binary=top_share)  # type: ignore[arg-type]


def _queries(rng: np.random.Generator, q: int, m: int) -> tuple[Any, Any]:
    """Graded relevance 0-3 (some queries with none relevant) and tie-free scores."""
    relevance = rng.integers(0, 4, (q, m)) * (rng.random((q, m)) < 0.5)
    scores = relevance * 0.3 + rng.random((q, m))
    return relevance.astype(float), scores


@pytest.mark.parametrize("seed", range(4))
def test_ranking_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    y, s = _queries(rng, int(rng.integers(2, 40)), int(rng.integers(3, 25)))
    for k in (None, 1, 3, 10):
        name = "ndcg" if k is None else f"ndcg@{k}"
        assert metric(name)(y, s) == pytest.approx(skm.ndcg_score(y, s, k=k), rel=1e-9)
    # Without a cut-off, average precision is scikit-learn's per query (0 without a relevant
    # item, where scikit-learn's is undefined).
    want = [
        skm.average_precision_score(y[i] > 0, s[i]) if (y[i] > 0).any() else 0.0
        for i in range(len(y))
    ]
    assert metric("map")(y, s) == pytest.approx(np.mean(want), rel=1e-9)


def _ap_at(relevance: Any, scores: Any, k: int) -> float:
    ranked = [r > 0 for _, r in sorted(zip(-scores, relevance, strict=True))][:k]
    hits, total = 0, 0.0
    for i, hit in enumerate(ranked, start=1):
        if hit:
            hits += 1
            total += hits / i
    relevant = int((relevance > 0).sum())
    return total / min(k, relevant) if relevant else 0.0


def test_map_at_k_padding_and_a_leading_axis() -> None:
    rng = np.random.default_rng(11)
    y, s = _queries(rng, 12, 9)
    for k in (1, 4, 9):
        want = np.mean([_ap_at(y[i], s[i], k) for i in range(len(y))])
        assert metric(f"map@{k}")(y, s) == pytest.approx(want, rel=1e-12)
    # A query with fewer items is padded with NaN: the same value as scored alone.
    short_y, short_s = y.copy(), s.copy()
    short_y[0, 5:], short_s[0, 5:] = np.nan, np.nan
    for name in ("ndcg", "map", "ndcg@3", "map@3"):
        alone = metric(name)(y[:1, :5], s[:1, :5])
        rest = metric(name)(y[1:], s[1:])
        assert metric(name)(short_y, short_s) == pytest.approx((alone + 11 * rest) / 12)
    batch_y, batch_s = np.stack([y, y[::-1]]), np.stack([s, s])
    for name in ("ndcg@5", "map"):
        np.testing.assert_allclose(
            metric(name)(batch_y, batch_s),
            [metric(name)(batch_y[i], batch_s[i]) for i in range(2)],
        )


def test_ranking_input_and_cut_offs_are_checked() -> None:
    assert metric("ndcg@5").name == "ndcg@5" and metric("ndcg@5").tasks == ("ranking",)
    with pytest.raises(InvalidInputError, match="whole number of items"):
        metric("ndcg@0")
    with pytest.raises(InvalidInputError, match="whole number of items"):
        metric("map@top")
    with pytest.raises(InvalidInputError, match="unknown metric 'mrr@3'"):
        metric("mrr@3")
    with pytest.raises(InvalidInputError, match="one row per query"):
        metric("ndcg")(np.ones(4), np.ones(4))


def test_average_ranks_are_scipys_without_importing_it() -> None:

    from scipy.stats import rankdata

    from conveyor.checks.metrics import _average_ranks

    rng = np.random.default_rng(12)
    for shape in [(1,), (9,), (3, 40), (2, 3, 25)]:
        ties = rng.integers(0, 4, shape).astype(float)
        np.testing.assert_allclose(_average_ranks(ties), rankdata(ties, axis=-1))
        distinct = rng.random(shape)
        np.testing.assert_allclose(_average_ranks(distinct), rankdata(distinct, axis=-1))
    code = (
        "import numpy as np; from conveyor.checks.metrics import metric; "
        "metric('roc_auc')(np.array([0, 1, 1]), np.array([0.1, 0.4, 0.9]))"
    )
    assert loaded_of(("scipy.stats",), code) == []
