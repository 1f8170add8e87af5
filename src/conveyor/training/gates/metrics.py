"""Model metrics by name, vectorized over a leading batch axis (bootstrap resamples).

Every metric takes ``y`` and ``p`` of shape ``(n,)`` or ``(B, n)`` and
returns a float or an array of shape ``(B,)``: one call scores a thousand
bootstrap resamples at once. Classification metrics are binary, with the
positive class ``1``; ``roc_auc`` and ``log_loss`` read scores (the
probability of class 1), the others read predicted labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]

__all__ = ["METRICS", "Metric", "metric"]

Needs = Literal["label", "score", "value"]


@dataclass(frozen=True, slots=True)
class Metric:
    """A named metric: how to compute it, what predictions it reads, which way is better."""

    name: str
    fn: Callable[[Any, Any], Any]
    needs: Needs
    greater_is_better: bool

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.greater_is_better else "minimize"

    def __call__(self, y: Any, p: Any) -> Any:
        """The metric of predictions ``p`` against truth ``y`` (batched on a leading axis)."""
        import numpy as np

        out = self.fn(np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64))
        return float(out) if np.ndim(out) == 0 else out


def _safe_div(num: Array, den: Array) -> Any:
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


def _accuracy(y: Array, p: Array) -> Any:
    import numpy as np

    return np.mean(y == p, axis=-1)


def _precision(y: Array, p: Array) -> Any:
    tp, fp, _ = _counts(y, p)
    return _safe_div(tp, tp + fp)


def _recall(y: Array, p: Array) -> Any:
    tp, _, fn = _counts(y, p)
    return _safe_div(tp, tp + fn)


def _f1(y: Array, p: Array) -> Any:
    tp, fp, fn = _counts(y, p)
    return _safe_div(2 * tp, 2 * tp + fp + fn)


def _roc_auc(y: Array, s: Array) -> Any:
    # Mann-Whitney U from average ranks (ties count one half), per row of the batch.
    import numpy as np
    from scipy.stats import rankdata

    ranks = rankdata(s, axis=-1)
    pos = y == 1
    n_pos = np.sum(pos, axis=-1, dtype=np.float64)
    n_neg = y.shape[-1] - n_pos
    rank_sum = np.sum(np.where(pos, ranks, 0.0), axis=-1)
    u = rank_sum - n_pos * (n_pos + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def _log_loss(y: Array, s: Array) -> Any:
    import numpy as np

    eps = np.finfo(np.float64).eps
    s = np.clip(s, eps, 1 - eps)
    return -np.mean(y * np.log(s) + (1 - y) * np.log1p(-s), axis=-1)


def _rmse(y: Array, p: Array) -> Any:
    import numpy as np

    return np.sqrt(np.mean((y - p) ** 2, axis=-1))


def _mse(y: Array, p: Array) -> Any:
    import numpy as np

    return np.mean((y - p) ** 2, axis=-1)


def _mae(y: Array, p: Array) -> Any:
    import numpy as np

    return np.mean(np.abs(y - p), axis=-1)


def _r2(y: Array, p: Array) -> Any:
    import numpy as np

    ss_res = np.sum((y - p) ** 2, axis=-1)
    ss_tot = np.sum((y - np.mean(y, axis=-1, keepdims=True)) ** 2, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", _accuracy, "label", True),
        Metric("precision", _precision, "label", True),
        Metric("recall", _recall, "label", True),
        Metric("f1", _f1, "label", True),
        Metric("roc_auc", _roc_auc, "score", True),
        Metric("log_loss", _log_loss, "score", False),
        Metric("rmse", _rmse, "value", False),
        Metric("mse", _mse, "value", False),
        Metric("mae", _mae, "value", False),
        Metric("r2", _r2, "value", True),
    )
}


def metric(name: str | Metric) -> Metric:
    """The metric called ``name``; InvalidInputError listing the known ones otherwise."""
    if isinstance(name, Metric):
        return name
    found = METRICS.get(name)
    if found is None:
        raise InvalidInputError(
            f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}",
            field="metric",
        )
    return found
