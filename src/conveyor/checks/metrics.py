"""Model metrics by name: one registry for gates, optimization reports and monitoring.

::

    from conveyor.checks.metrics import metric

    auc = metric("roc_auc")
    auc(y, scores)                                   # binary: the probability of class 1
    auc(y, proba, classes=model.classes_)            # multiclass: one-vs-rest, macro average
    metric("f1")(y, labels, task="multiclass")       # macro F1
    metric("rmse").greater_is_better                 # False

A :class:`Metric` knows what predictions it reads (``needs``: predicted
labels, scores or values), which way is better, and which kinds of task it
applies to: ``binary`` and ``multiclass`` classification, ``regression``,
``ranking`` (``ndcg`` and ``map``, and ``metric("ndcg@10")`` for a cut-off:
relevance and scores as ``(queries, items)`` matrices, NaN padding the shorter
queries).
Each task has its own function, all numpy (imported when a metric runs, so
``import conveyor.checks`` stays light), and every one is vectorized over
leading axes: ``y`` of shape ``(B, n)`` scores ``B`` resamples in one call.

Conventions, as scikit-learn's (``tests/checks/test_metrics.py`` holds every
metric to its counterpart on random and degenerate data):

- binary: the positive class is ``classes[1]`` when ``classes`` is given,
  else ``1``; scores are the probability of the positive class (an ``(n, 2)``
  matrix is read as its column 1). precision, recall and f1 are those of the
  positive class.
- multiclass: labels are any values; precision, recall and f1 are macro
  averages over the labels present in ``y`` or the predictions; scores are an
  ``(n, K)`` matrix whose columns are ``classes`` (default: ``0 .. K-1``);
  roc_auc is one-vs-rest, macro averaged.
- calibration_error is the expected calibration error over ten equal-width
  bins of the positive class's probability (binary) or of the top class's
  (multiclass: top-label), with calibration_curve's bins; mape divides by
  ``max(|y|, eps)`` as scikit-learn's.
- A ratio with nothing to count (precision with no predicted positive) is 0,
  as scikit-learn's ``zero_division=0``. A metric that is undefined on the
  data (roc_auc with one class present, r2 of a constant truth) is NaN, where
  scikit-learn warns, raises or substitutes 1.0 or 0.0.

Without ``task``, it is inferred: from ``classes`` (two or fewer: binary),
from the scores' shape (a class axis wider than 2: multiclass), or from the
labels (all 0 or 1: binary). :func:`register` adds a metric, which every gate
and report can then name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from conveyor._names import NameTable
from conveyor.checks import resample
from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy.typing as npt

    Array = npt.NDArray[Any]

__all__ = ["METRICS", "TASKS", "Metric", "Needs", "Task", "metric", "register"]

Needs = Literal["label", "score", "value"]
Task = Literal["binary", "multiclass", "regression", "ranking"]
TASKS: tuple[Task, ...] = ("binary", "multiclass", "regression", "ranking")

#: ``fn(y, predictions)`` for one task, on the arrays :meth:`Metric.__call__` prepares.
MetricFn = Callable[[Any, Any], Any]


@dataclass(frozen=True, slots=True)
class Metric:
    """A named metric: what it reads, which way is better, and a function per task it applies to.

    The task functions receive prepared arrays: binary ``y`` (and labels) as
    0.0/1.0 for the positive class, scores as floats; multiclass labels as
    given, multiclass ``y`` for scores as column indices into ``(..., n, K)``
    scores; regression values as floats. ``weighted``, when given, is the
    binary/regression form ``f(y, p, counts)`` scoring many bootstrap
    resamples from row counts (see :mod:`conveyor.checks.resample`).
    """

    name: str
    needs: Needs
    greater_is_better: bool
    binary: MetricFn | None = None
    multiclass: MetricFn | None = None
    regression: MetricFn | None = None
    ranking: MetricFn | None = None
    weighted: Callable[[Any, Any, Any], Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.needs not in ("label", "score", "value"):
            raise InvalidInputError(
                f"metric {self.name!r}: needs is 'label', 'score' or 'value', got {self.needs!r}",
                field="needs",
            )
        if not self.tasks:
            raise InvalidInputError(
                f"metric {self.name!r} has no function for any task (binary, multiclass, "
                "regression, ranking)",
                field="metric",
            )

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The kinds of task this metric applies to."""
        return tuple(t for t in TASKS if self._fn(t) is not None)

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.greater_is_better else "minimize"

    def __call__(
        self,
        y: Any,
        predictions: Any,
        *,
        task: Task | None = None,
        classes: Sequence[Any] | Any | None = None,
    ) -> Any:
        """The metric of ``predictions`` against the truth ``y``: a float, or one per resample.

        ``classes`` are the model's classes in the order of its score columns
        (``model.classes_``); ``task`` is inferred when not given (see the module).
        """
        import numpy as np

        chosen = self.task_of(y, predictions, task=task, classes=classes)
        fn = self._fn(chosen)
        assert fn is not None  # task_of only answers a task this metric has
        y_, p_ = _prepare(self.needs, chosen, y, predictions, classes)
        out = fn(y_, p_)
        return float(out) if np.ndim(out) == 0 else out

    def task_of(
        self,
        y: Any,
        predictions: Any,
        *,
        task: Task | None = None,
        classes: Sequence[Any] | Any | None = None,
    ) -> Task:
        """The task this metric computes on these arrays; InvalidInputError if it does not apply."""
        return self.check_task(self._infer(y, predictions, classes) if task is None else task)

    def check_task(self, task: Task) -> Task:
        """``task``, if this metric applies to it; InvalidInputError saying which it applies to."""
        if task not in TASKS:
            raise InvalidInputError(
                f"task must be one of {', '.join(TASKS)}, got {task!r}", field="task"
            )
        if self._fn(task) is None:
            raise InvalidInputError(
                f"metric {self.name!r} does not apply to {task} tasks "
                f"(it applies to: {', '.join(self.tasks)})",
                field="metric",
                metric=self.name,
                task=task,
            )
        return task

    def _fn(self, task: Task) -> MetricFn | None:
        fn: MetricFn | None = getattr(self, task)
        return fn

    def _infer(self, y: Any, predictions: Any, classes: Any) -> Task:
        import numpy as np

        tasks = self.tasks
        if len(tasks) == 1:
            return tasks[0]
        if self.needs == "value":
            return "regression"
        if classes is not None:
            return "binary" if len(classes) <= 2 else "multiclass"
        if self.needs == "score":
            p, y_arr = np.asarray(predictions), np.asarray(y)
            wide = p.ndim == y_arr.ndim + 1 and p.shape[-1] > 2
            return "multiclass" if wide else "binary"
        seen = np.concatenate([np.ravel(y), np.ravel(predictions)])
        try:
            binary = bool(np.isin(seen, (0, 1)).all())
        except TypeError:  # labels numpy cannot compare with numbers
            binary = False
        return "binary" if binary else "multiclass"


def _prepare(
    needs: Needs, task: Task, y: Any, predictions: Any, classes: Any
) -> tuple[Array, Array]:
    """The arrays a task function receives (see :class:`Metric`)."""
    import numpy as np

    if task == "regression":
        return _floats(y, "y"), _floats(predictions, "predictions")
    if task == "ranking":
        relevance, scores = _floats(y, "y"), _floats(predictions, "scores")
        if relevance.ndim < 2 or relevance.shape != scores.shape:
            raise InvalidInputError(
                "ranking metrics read relevance and scores as matrices of the same shape, one "
                f"row per query (NaN pads the shorter ones), got {relevance.shape} and "
                f"{scores.shape}",
                field="predictions",
            )
        return relevance, scores
    if task == "binary":
        positive = 1 if classes is None else list(classes)[-1]
        y_arr = np.asarray(y)
        truth = _floats(y, "y") if classes is None else (y_arr == positive).astype(np.float64)
        if needs == "label":
            p_arr = np.asarray(predictions)
            p = _floats(p_arr, "predictions") if classes is None else p_arr == positive
            return truth, np.asarray(p, dtype=np.float64)
        scores = _floats(predictions, "scores")
        if scores.ndim == truth.ndim + 1:  # an (n, 2) matrix of both classes' probabilities
            scores = scores[..., -1]
        return truth, scores
    if needs == "label":
        return np.asarray(y), np.asarray(predictions)
    scores = _floats(predictions, "scores")
    if scores.ndim < 2:
        raise InvalidInputError(
            "multiclass scores are a matrix with one column per class", field="predictions"
        )
    return _codes(y, classes, scores.shape[-1]), scores


def _floats(values: Any, what: str) -> Array:
    import numpy as np

    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{what} must be numbers here (pass classes= for labels such as strings): {exc}",
            field=what,
        ) from exc


def _codes(y: Any, classes: Any, width: int) -> Array:
    """Multiclass truth as the column index of its class in the scores."""
    import numpy as np

    known = list(range(width)) if classes is None else list(classes)
    if len(known) != width:
        raise InvalidInputError(
            f"{len(known)} classes for scores with {width} columns", field="classes"
        )
    index = {value: i for i, value in enumerate(known)}
    values, inverse = np.unique(np.asarray(y), return_inverse=True)
    try:
        mapped = np.array([index[v.item() if hasattr(v, "item") else v] for v in values])
    except KeyError as exc:
        raise InvalidInputError(
            f"y holds {exc.args[0]!r}, which is not one of the classes {known}", field="y"
        ) from None
    return mapped[inverse].reshape(np.shape(y)).astype(np.intp)


# -- shared pieces ------------------------------------------------------------------


def _ratio(num: Any, den: Any) -> Any:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _counts(y: Array, p: Array) -> tuple[Any, Any, Any]:
    import numpy as np

    pos, pred = y == 1, p == 1
    tp = np.sum(pos & pred, axis=-1, dtype=np.float64)
    fp = np.sum(~pos & pred, axis=-1, dtype=np.float64)
    fn = np.sum(pos & ~pred, axis=-1, dtype=np.float64)
    return tp, fp, fn


def _per_label(y: Array, p: Array) -> tuple[Any, Any, Any, Any]:
    """Per label (last axis) counts of tp, fp, fn, and whether the label occurs in the row."""
    import numpy as np

    labels = np.unique(np.concatenate([np.ravel(y), np.ravel(p)]))
    y_hot = y[..., None] == labels  # (..., n, L)
    p_hot = p[..., None] == labels
    tp = np.sum(y_hot & p_hot, axis=-2, dtype=np.float64)
    fp = np.sum(~y_hot & p_hot, axis=-2, dtype=np.float64)
    fn = np.sum(y_hot & ~p_hot, axis=-2, dtype=np.float64)
    present = (tp + fp + fn) > 0  # scikit-learn averages over labels present in y or p
    return tp, fp, fn, present


def _macro(per_label: Any, present: Any) -> Any:
    import numpy as np

    return np.sum(np.where(present, per_label, 0.0), axis=-1) / np.sum(present, axis=-1)


# -- classification -----------------------------------------------------------------


def _accuracy(y: Array, p: Array) -> Any:
    import numpy as np

    return np.mean(y == p, axis=-1)


def _precision(y: Array, p: Array) -> Any:
    tp, fp, _ = _counts(y, p)
    return _ratio(tp, tp + fp)


def _recall(y: Array, p: Array) -> Any:
    tp, _, fn = _counts(y, p)
    return _ratio(tp, tp + fn)


def _f1(y: Array, p: Array) -> Any:
    tp, fp, fn = _counts(y, p)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _macro_precision(y: Array, p: Array) -> Any:
    tp, fp, _, present = _per_label(y, p)
    return _macro(_ratio(tp, tp + fp), present)


def _macro_recall(y: Array, p: Array) -> Any:
    tp, _, fn, present = _per_label(y, p)
    return _macro(_ratio(tp, tp + fn), present)


def _macro_f1(y: Array, p: Array) -> Any:
    tp, fp, fn, present = _per_label(y, p)
    return _macro(_ratio(2 * tp, 2 * tp + fp + fn), present)


def _average_ranks(values: Array) -> Array:
    """Ranks from 1 along the last axis, ties sharing their average (scipy's rankdata, whose
    import alone takes a second: a monitor's first quality query should not pay it)."""
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    shape, n = a.shape, a.shape[-1]
    flat = a.reshape(-1, n)
    rows = flat.shape[0]
    order = np.argsort(flat, axis=-1, kind="mergesort")
    ordered = np.take_along_axis(flat, order, axis=-1)
    starts = np.ones_like(ordered, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]  # a new value begins a tie group
    group = np.cumsum(starts, axis=-1) - 1 + (np.arange(rows) * n)[:, None]
    counts = np.bincount(group.ravel(), minlength=rows * n)
    first = np.cumsum(counts) - counts - np.repeat(np.arange(rows) * n, n)
    average = first + (counts - 1) / 2 + 1  # positions are 0-based, ranks 1-based
    ranks = np.empty_like(flat)
    np.put_along_axis(ranks, order, average[group], axis=-1)
    return ranks.reshape(shape)


def _roc_auc(y: Array, s: Array) -> Any:
    # Mann-Whitney U from average ranks (ties count one half), per row of the batch.
    import numpy as np

    ranks = _average_ranks(s)
    pos = y == 1
    n_pos = np.sum(pos, axis=-1, dtype=np.float64)
    n_neg = y.shape[-1] - n_pos
    rank_sum = np.sum(np.where(pos, ranks, 0.0), axis=-1)
    u = rank_sum - n_pos * (n_pos + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def _ovr_roc_auc(y: Array, s: Array) -> Any:
    # One class against the rest, per column, then the unweighted mean: NaN when a
    # class is absent from a row (its own AUC is undefined), as scikit-learn's.
    import numpy as np

    per_class = [_roc_auc((y == k).astype(np.float64), s[..., k]) for k in range(s.shape[-1])]
    return np.mean(np.stack(per_class, axis=-1), axis=-1)


_EPS = 2.220446049250313e-16  # numpy's float64 eps, as scikit-learn clips with


def _log_loss(y: Array, s: Array) -> Any:
    import numpy as np

    s = np.clip(s, _EPS, 1 - _EPS)
    return -np.mean(y * np.log(s) + (1 - y) * np.log1p(-s), axis=-1)


def _multi_log_loss(y: Array, s: Array) -> Any:
    import numpy as np

    chosen = np.take_along_axis(s, y[..., None], axis=-1)[..., 0]
    return -np.mean(np.log(np.clip(chosen, _EPS, 1 - _EPS)), axis=-1)


def _brier(y: Array, s: Array) -> Any:
    import numpy as np

    return np.mean((s - y) ** 2, axis=-1)


def _multi_brier(y: Array, s: Array) -> Any:
    # Summed over classes and not halved, as scikit-learn's for three classes or more.
    import numpy as np

    hot = (y[..., None] == np.arange(s.shape[-1])).astype(np.float64)
    return np.mean(np.sum((s - hot) ** 2, axis=-1), axis=-1)


_BINS = 10  # calibration error: equal-width bins over [0, 1], as calibration_curve's


def _binned_gap(hit: Array, confidence: Array) -> Any:
    # Expected calibration error: per bin, |observed rate - mean confidence| weighted by
    # the bin's share of rows, i.e. sum over bins of |sum(hit) - sum(confidence)| / n.
    # Bins as scikit-learn's calibration_curve(strategy="uniform"): (0, .1], (.1, .2] ...
    import numpy as np

    edges = np.linspace(0.0, 1.0, _BINS + 1)
    index = np.searchsorted(edges[1:-1], confidence)
    hot = index[..., None] == np.arange(_BINS)  # (..., n, bins)
    hits = np.sum(np.where(hot, hit[..., None], 0.0), axis=-2)
    confident = np.sum(np.where(hot, confidence[..., None], 0.0), axis=-2)
    return np.sum(np.abs(hits - confident), axis=-1) / hit.shape[-1]


def _calibration_error(y: Array, s: Array) -> Any:
    return _binned_gap(y, s)


def _multi_calibration_error(y: Array, s: Array) -> Any:
    # Top-label calibration: the confidence of the predicted class against whether it was right.
    import numpy as np

    top = np.argmax(s, axis=-1)
    return _binned_gap((top == y).astype(np.float64), np.max(s, axis=-1))


# -- regression ---------------------------------------------------------------------


def _mse(y: Array, p: Array) -> Any:
    import numpy as np

    return np.mean((y - p) ** 2, axis=-1)


def _rmse(y: Array, p: Array) -> Any:
    import numpy as np

    return np.sqrt(_mse(y, p))


def _mae(y: Array, p: Array) -> Any:
    import numpy as np

    return np.mean(np.abs(y - p), axis=-1)


def _r2(y: Array, p: Array) -> Any:
    import numpy as np

    ss_res = np.sum((y - p) ** 2, axis=-1)
    ss_tot = np.sum((y - np.mean(y, axis=-1, keepdims=True)) ** 2, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)


def _mape(y: Array, p: Array) -> Any:
    # As scikit-learn's: |y - p| / max(|y|, eps), so a zero truth gives a huge ratio, not inf.
    import numpy as np

    return np.mean(np.abs(y - p) / np.maximum(np.abs(y), _EPS), axis=-1)


# -- ranking ------------------------------------------------------------------------
# Relevance and scores are (..., queries, items); NaN pads a query with fewer items (its
# score sorts last and its gain is 0). Items are ranked by score, ties in item order (as
# scikit-learn's ndcg_score with ignore_ties=True); the mean is over queries with an item.


def _ranked(y: Array, s: Array, k: int | None) -> tuple[Array, Array, int]:
    import numpy as np

    gains = np.nan_to_num(y, nan=0.0)
    order = np.argsort(-s, axis=-1, kind="stable")  # NaN (padding) last
    ranked = np.take_along_axis(gains, order, axis=-1)
    top = y.shape[-1] if k is None else min(k, y.shape[-1])
    return gains, ranked[..., :top], top


def _over_queries(per_query: Any, y: Array) -> Any:
    import numpy as np

    present = np.any(~np.isnan(y), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(np.where(present, per_query, 0.0), axis=-1) / np.sum(present, axis=-1)


def _ndcg(y: Array, s: Array, k: int | None = None) -> Any:
    # Linear gains (the relevance itself) and 1/log2(rank + 1) discounts, as scikit-learn's;
    # a query with no relevant item scores 0.
    import numpy as np

    gains, ranked, top = _ranked(y, s, k)
    discount = 1.0 / np.log2(np.arange(2, top + 2))
    dcg = np.sum(ranked * discount, axis=-1)
    ideal = np.sum(-np.sort(-gains, axis=-1)[..., :top] * discount, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_query = np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0)
    return _over_queries(per_query, y)


def _map(y: Array, s: Array, k: int | None = None) -> Any:
    # Average precision at k: the precision at each relevant item's rank within the top k,
    # summed and divided by min(k, relevant items); relevant means relevance > 0. Without
    # k it is scikit-learn's average_precision_score per query. No relevant item: 0.
    import numpy as np

    gains, ranked, top = _ranked(y, s, k)
    hit = (ranked > 0).astype(np.float64)
    precision = np.cumsum(hit, axis=-1) / np.arange(1, top + 1)
    relevant = np.sum(gains > 0, axis=-1)
    den = np.minimum(relevant, top).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.sum(precision * hit, axis=-1) / np.where(den > 0, den, 1.0)
    per_query = np.where(den > 0, ratio, 0.0)
    return _over_queries(per_query, y)


#: Ranking metrics that take a cut-off: ``ndcg@10`` is :func:`metric`'s for ``ndcg`` at 10.
_AT_K: dict[str, Callable[..., Any]] = {"ndcg": _ndcg, "map": _map}


def _at_k(name: str) -> Metric | None:
    """``ndcg@K`` / ``map@K``: the ranking metric cut off at the top ``K`` items."""
    import functools

    base, at, k_text = name.partition("@")
    if not at or base not in _AT_K:
        return None
    if not k_text.isdigit() or int(k_text) < 1:
        raise InvalidInputError(
            f"metric {name!r}: the cut-off after '@' is a whole number of items, 1 or more",
            field="metric",
        )
    return Metric(name, "score", True, ranking=functools.partial(_AT_K[base], k=int(k_text)))


# -- the registry -------------------------------------------------------------------


def _check(name: str, m: Metric) -> None:
    if not isinstance(m, Metric) or m.name != name:
        raise InvalidInputError(
            f"metric {name!r}: register a Metric whose name is {name!r}, got {m!r}",
            field="metric",
        )


_W = resample
_BUILT_IN = (
    Metric("accuracy", "label", True, _accuracy, _accuracy, weighted=_W.accuracy),
    Metric("precision", "label", True, _precision, _macro_precision, weighted=_W.precision),
    Metric("recall", "label", True, _recall, _macro_recall, weighted=_W.recall),
    Metric("f1", "label", True, _f1, _macro_f1, weighted=_W.f1),
    Metric("roc_auc", "score", True, _roc_auc, _ovr_roc_auc, weighted=_W.roc_auc),
    Metric("log_loss", "score", False, _log_loss, _multi_log_loss, weighted=_W.log_loss),
    Metric("brier", "score", False, _brier, _multi_brier, weighted=_W.mse),
    Metric("calibration_error", "score", False, _calibration_error, _multi_calibration_error),
    Metric("rmse", "value", False, regression=_rmse, weighted=_W.rmse),
    Metric("mse", "value", False, regression=_mse, weighted=_W.mse),
    Metric("mae", "value", False, regression=_mae, weighted=_W.mae),
    Metric("r2", "value", True, regression=_r2, weighted=_W.r2),
    Metric("mape", "value", False, regression=_mape, weighted=_W.mape),
    Metric("ndcg", "score", True, ranking=_ndcg),
    Metric("map", "score", True, ranking=_map),
)

#: Every metric by name; :func:`register` adds one.
METRICS: NameTable[Metric] = NameTable(
    "metric", ((m.name, m) for m in _BUILT_IN), field="metric", check=_check
)


def register(m: Metric, *, clobber: bool = False) -> Metric:
    """Add ``m`` under its name (``clobber=True`` to replace one); gates and reports can name it."""
    return METRICS.register(m.name, m, clobber=clobber)


def metric(name: str | Metric) -> Metric:
    """The metric called ``name`` (a Metric passes through); InvalidInputError listing the known."""
    if isinstance(name, Metric):
        return name
    if name not in METRICS:
        cut = _at_k(name)
        if cut is not None:
            return cut
    return METRICS.require(name)
