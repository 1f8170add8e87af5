"""Confidence-based performance estimation (CBPE): a classifier's accuracy without labels.

::

    estimator = CBPE().fit(reference_scores, reference_labels, classes=model.classes_)
    estimate = estimator.estimate(live_scores)
    estimate.accuracy, estimate.accuracy_std, estimate.roc_auc, estimate.f1
    estimator.realized(live_scores, live_labels)   # the same metrics, once labels arrive

The idea is NannyML's (Confidence-Based Performance Estimation), implemented here on
numpy. A classifier whose scores are *calibrated* says how often it is right: among rows
scored 0.8 for class 1, 80% are class 1. So on live data with no labels yet, the
expected confusion matrix is the sum of the calibrated probabilities:

* the chance a row is predicted right is its calibrated probability of the class it is
  predicted as (``c_i``), and the expected **accuracy** is the mean of ``c_i``; its
  sampling standard deviation is ``sqrt(sum c_i (1 - c_i)) / n`` (each row is a
  Bernoulli trial);
* binary **F1** from the expected counts: ``TP = sum p_i`` over rows predicted
  positive, ``FP = sum (1 - p_i)`` over them, ``FN = sum p_i`` over rows predicted
  negative;
* **ROC AUC**: rows ranked by score, the expected true-positive rate at each cut is the
  share of the total ``p`` above it, the false-positive rate the share of ``1 - p``;
  the area under that curve (macro one-vs-rest for more than two classes).

This holds under **covariate shift** (the inputs move, ``P(y | x)`` does not): the
estimate follows the inputs into regions where the model is less sure. It cannot see
**concept drift** (the same inputs now mean another label): that takes labels (see
the feedback monitors).

Calibration. Scores are recalibrated on the reference, where the labels are known, by
isotonic regression (``calibration="isotonic"``, the default; one-vs-rest and
renormalized for more than two classes): an already calibrated model keeps about its
scores, an over- or under-confident one is corrected. The fit bins the reference
scores at their quantiles (at most 1,000 bins, at least 50 rows each) and runs the
pool-adjacent-violators algorithm on the bins; live scores are mapped through it by
linear interpolation. ``calibration="none"`` trusts the scores as they are.

Predicted class: the class of the highest score (for two classes, a score of the
positive class at or above 0.5). A model that answers with another threshold should
pass its own predicted labels to :meth:`CBPE.estimate` (``predicted=``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from conveyor.errors import InvalidInputError, NotFittedError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]

__all__ = ["CBPE", "Estimate", "isotonic_fit"]

Calibration = Literal["isotonic", "none"]

#: Reference rows per calibration bin (at least), and bins (at most).
_BIN_ROWS = 50
_MAX_BINS = 1000


@dataclass(frozen=True, slots=True)
class Estimate:
    """CBPE's estimate for one sample of scores."""

    rows: int
    accuracy: float
    #: The sampling standard deviation of the estimated accuracy (rows as Bernoulli trials).
    accuracy_std: float
    roc_auc: float | None
    #: Binary only (the positive class is the second of ``classes``).
    f1: float | None
    #: Mean calibrated probability of the predicted class, before and after calibration.
    mean_confidence_raw: float
    classes: tuple[Any, ...] = ()
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "accuracy": _round(self.accuracy),
            "accuracy_std": _round(self.accuracy_std),
            "roc_auc": _round(self.roc_auc),
            "f1": _round(self.f1),
            "mean_confidence_raw": _round(self.mean_confidence_raw),
            "classes": [_plain(c) for c in self.classes],
            "notes": list(self.notes),
        }


class CBPE:
    """Label-free estimate of a classifier's accuracy, ROC AUC and F1 (see the module).

    Parameters
    ----------
    calibration:
        ``"isotonic"`` (default): recalibrate the scores on the reference;
        ``"none"``: take them as calibrated.
    """

    # Learned by fit.
    classes_: tuple[Any, ...]
    calibrators_: list[tuple[Array, Array]]
    reference_: Estimate

    def __init__(self, calibration: Calibration = "isotonic") -> None:
        self.calibration = calibration

    def fit(self, scores: Any, labels: Any, *, classes: Sequence[Any] | None = None) -> CBPE:
        """Learn the calibration from the reference's ``scores`` and true ``labels``.

        ``scores``: ``(n,)`` the positive class's probability, or ``(n, k)`` one column per
        class; ``classes``: the classes in the order of the columns (``model.classes_``;
        default: the sorted distinct labels, or ``0..k-1``).
        """
        import numpy as np

        if self.calibration not in ("isotonic", "none"):
            raise InvalidInputError(
                f"calibration must be 'isotonic' or 'none', got {self.calibration!r}",
                field="calibration",
            )
        matrix = _matrix(scores, "scores")
        y = np.asarray(labels)
        if y.ndim != 1 or len(y) != len(matrix):
            raise InvalidInputError(
                f"labels must be one per row of scores ({len(matrix)}), got shape {y.shape}",
                field="labels",
            )
        if len(y) < 2:
            raise InvalidInputError("the reference needs at least 2 labelled rows", field="labels")
        k = matrix.shape[1]
        if classes is None:
            seen = np.unique(y)
            classes = tuple(seen.tolist()) if len(seen) == k else tuple(range(k))
        classes = tuple(_plain(c) for c in classes)
        if len(classes) != k:
            raise InvalidInputError(
                f"{len(classes)} classes for {k} score columns", field="classes", classes=classes
            )
        codes = _codes(y, classes, "labels")
        self.classes_ = classes
        self.calibrators_ = []
        if self.calibration == "isotonic":
            for j in range(k if k > 2 else 1):
                column = matrix[:, j if k > 2 else 1]
                target = (codes == (j if k > 2 else 1)).astype(np.float64)
                self.calibrators_.append(isotonic_fit(column, target))
        self.reference_ = self.estimate(matrix)
        return self

    def calibrated(self, scores: Any) -> Array:
        """``(n, k)`` calibrated class probabilities of ``scores``."""
        import numpy as np

        self._fitted()
        matrix = _matrix(scores, "scores")
        k = len(self.classes_)
        if matrix.shape[1] != k:
            raise InvalidInputError(
                f"scores have {matrix.shape[1]} columns, the reference had {k}", field="scores"
            )
        if not self.calibrators_:
            return matrix
        if k == 2:
            x, y = self.calibrators_[0]
            p1 = np.interp(matrix[:, 1], x, y)
            return np.column_stack([1.0 - p1, p1])
        out = np.column_stack(
            [np.interp(matrix[:, j], x, y) for j, (x, y) in enumerate(self.calibrators_)]
        )
        total = out.sum(axis=1, keepdims=True)
        flat = total[:, 0] <= 0
        out[flat] = 1.0 / k
        total[flat] = 1.0
        return np.asarray(out / total, dtype=np.float64)

    def estimate(self, scores: Any, *, predicted: Any = None) -> Estimate:
        """The expected accuracy, ROC AUC and F1 of the model on ``scores`` (no labels)."""
        import numpy as np

        self._fitted()
        raw = _matrix(scores, "scores")
        n = len(raw)
        if n == 0:
            raise InvalidInputError("no scores to estimate from", field="scores")
        p = self.calibrated(raw)
        k = p.shape[1]
        if predicted is None:
            chosen = np.argmax(raw, axis=1) if k > 2 else (raw[:, 1] >= 0.5).astype(np.int64)
        else:
            labels = np.asarray(predicted)
            if labels.ndim != 1 or len(labels) != n:
                raise InvalidInputError(
                    f"predicted must be {n} labels among {list(self.classes_)}",
                    field="predicted",
                )
            chosen = _codes(labels, self.classes_, "predicted")
        rows = np.arange(n)
        correct = p[rows, chosen]
        accuracy = float(correct.mean())
        std = float(np.sqrt(np.sum(correct * (1.0 - correct))) / n)
        if k == 2:
            auc = _expected_auc(raw[:, 1], p[:, 1])
            positive = chosen == 1
            tp = float(p[positive, 1].sum())
            fp = float((1.0 - p[positive, 1]).sum())
            fn = float(p[~positive, 1].sum())
            f1: float | None = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) > 0 else None
        else:
            aucs = [_expected_auc(raw[:, j], p[:, j]) for j in range(k)]
            found = [a for a in aucs if a is not None]
            auc = float(np.mean(found)) if found else None
            f1 = None
        return Estimate(
            rows=n,
            accuracy=accuracy,
            accuracy_std=std,
            roc_auc=auc,
            f1=f1,
            mean_confidence_raw=float(raw[rows, chosen].mean()),
            classes=self.classes_,
        )

    def realized(self, scores: Any, labels: Any, *, predicted: Any = None) -> dict[str, Any]:
        """The realized accuracy, ROC AUC and F1 against true ``labels`` (the training gates'
        metric code, :mod:`conveyor.checks.metrics`), beside the estimate and its error."""
        import numpy as np

        from conveyor.checks.metrics import metric

        self._fitted()
        raw = _matrix(scores, "scores")
        y = np.asarray(labels)
        if y.ndim != 1 or len(y) != len(raw):
            raise InvalidInputError(
                f"labels must be one per row of scores ({len(raw)})", field="labels"
            )
        estimate = self.estimate(raw, predicted=predicted)
        k = raw.shape[1]
        classes = list(self.classes_)
        if predicted is None:
            chosen = np.argmax(raw, axis=1) if k > 2 else (raw[:, 1] >= 0.5).astype(np.int64)
            predicted = np.asarray(classes, dtype=object)[chosen]
        truth = np.asarray([_plain(v) for v in y.tolist()], dtype=object)
        hits = np.asarray([_plain(v) for v in np.asarray(predicted).tolist()], dtype=object)
        accuracy = float(np.mean(truth == hits))
        auc: float | None = None
        f1: float | None = None
        try:
            if k == 2:
                positive = classes[1]
                y01 = (truth == positive).astype(np.float64)
                if 0 < y01.sum() < len(y01):
                    auc = float(metric("roc_auc")(y01, raw[:, 1], task="binary"))
                f1 = float(metric("f1")(y01, (hits == positive).astype(np.float64), task="binary"))
            elif len(set(truth.tolist())) > 1:
                auc = float(metric("roc_auc")(truth, raw, task="multiclass", classes=classes))
        except InvalidInputError:
            auc = auc  # a metric that does not apply to these labels stays unknown
        return {
            "rows": len(raw),
            "accuracy": _round(accuracy),
            "roc_auc": _round(auc),
            "f1": _round(f1),
            "estimate": estimate.to_dict(),
            "accuracy_error": _round(estimate.accuracy - accuracy),
            "roc_auc_error": _round(
                None if auc is None or estimate.roc_auc is None else estimate.roc_auc - auc
            ),
        }

    def _fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError("CBPE is not fitted: call fit(reference scores, labels) first")


def isotonic_fit(scores: Any, target: Any) -> tuple[Array, Array]:
    """A monotone map from score to probability of ``target`` (0/1): knots ``(x, y)`` for
    ``numpy.interp``, from the pool-adjacent-violators algorithm on quantile bins."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    keep = np.isfinite(s)
    s, t = s[keep], t[keep]
    if len(s) == 0:
        raise InvalidInputError("no finite score to calibrate on", field="scores")
    order = np.argsort(s, kind="stable")
    s, t = s[order], t[order]
    bins = int(min(_MAX_BINS, max(1, len(s) // _BIN_ROWS)))
    edges = np.linspace(0, len(s), bins + 1).astype(np.int64)
    # Rows with the same score belong to one bin: cut only where the score changes.
    cuts = np.unique(np.searchsorted(s, s[np.minimum(edges[1:-1], len(s) - 1)], side="left"))
    cuts = cuts[(cuts > 0) & (cuts < len(s))]
    bounds = np.concatenate([[0], cuts, [len(s)]])
    weight = np.diff(bounds).astype(np.float64)
    x = np.add.reduceat(s, bounds[:-1]) / weight
    y = np.add.reduceat(t, bounds[:-1]) / weight
    # Pool adjacent violators (weighted), on the bins.
    level: list[float] = []
    mass: list[float] = []
    count: list[int] = []
    for yi, wi in zip(y.tolist(), weight.tolist(), strict=True):
        level.append(yi)
        mass.append(wi)
        count.append(1)
        while len(level) > 1 and level[-2] > level[-1]:
            w = mass[-2] + mass[-1]
            merged = (level[-2] * mass[-2] + level[-1] * mass[-1]) / w
            c = count[-2] + count[-1]
            level[-2:], mass[-2:], count[-2:] = [merged], [w], [c]
    fitted = np.repeat(np.asarray(level), np.asarray(count))
    return x, np.clip(fitted, 0.0, 1.0)


def _codes(values: Any, classes: Sequence[Any], field: str) -> Any:
    """Each value's position in ``classes`` (one lookup per distinct value)."""
    import numpy as np

    distinct, inverse = np.unique(np.asarray(values), return_inverse=True)
    index = {c: i for i, c in enumerate(classes)}
    found = [index.get(_plain(v)) for v in distinct.tolist()]
    unknown = [v for v, i in zip(distinct.tolist(), found, strict=True) if i is None]
    if unknown:
        raise InvalidInputError(
            f"{field}: {unknown[:5]} are not among the classes {list(classes)}",
            field=field,
        )
    return np.asarray(found, dtype=np.int64)[np.ravel(inverse)]


def _expected_auc(score: Array, p: Array) -> float | None:
    """ROC AUC from calibrated probabilities instead of labels (see the module)."""
    import numpy as np

    positives, negatives = float(p.sum()), float((1.0 - p).sum())
    if positives <= 0 or negatives <= 0:
        return None
    order = np.argsort(-score, kind="stable")
    s, q = score[order], p[order]
    # Tied scores are one step of the curve (a diagonal segment).
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tpr = np.r_[0.0, np.cumsum(q)[last] / positives]
    fpr = np.r_[0.0, np.cumsum(1.0 - q)[last] / negatives]
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))


def _matrix(scores: Any, field: str) -> Array:
    import numpy as np

    try:
        m = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{field} must be numbers", field=field) from None
    if m.ndim == 1:
        m = np.column_stack([1.0 - m, m])
    if m.ndim != 2 or m.shape[1] < 2:
        raise InvalidInputError(
            f"{field} must be (n,) positive-class probabilities or (n, k) class scores, "
            f"got shape {m.shape}",
            field=field,
        )
    if not np.isfinite(m).all():
        raise InvalidInputError(f"{field} hold NaN or infinite values", field=field)
    return m


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)
