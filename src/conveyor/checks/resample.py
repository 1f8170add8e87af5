"""Metrics of many bootstrap resamples at once, from row counts instead of copied rows.

These are the count-weighted forms of the binary and regression metrics of
:mod:`conveyor.checks.metrics` (each :class:`~conveyor.checks.metrics.Metric`
names its own as ``weighted``); the paired bootstrap of the champion gate
uses them. Each is ``f(y, predictions, counts (B, n)) -> (B,)``.

A resample that draws row ``i`` ``c[i]`` times scores like the full set
weighted by ``c``. So per-row quantities are computed once per model and
each resample is a matrix-vector product with its counts; ``roc_auc`` sorts
the scores once and sums counts per tie group. The cost is O(resamples x
rows) with no per-resample sort or log. Measured on a 2-core machine, 1,000
resamples of 100,000 rows: roc_auc 5.7 s instead of 40 s when copying the
rows, log_loss 1.8 s instead of 6.9 s (drawing the indices is most of it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]

__all__ = [
    "accuracy",
    "counts_of",
    "f1",
    "log_loss",
    "mae",
    "mape",
    "mse",
    "precision",
    "r2",
    "recall",
    "rmse",
    "roc_auc",
]


def counts_of(idx: Array | npt.NDArray[np.int64], n: int) -> Array:
    """``(B, n)`` row counts of ``B`` resamples given as drawn row indices ``(B, n)``."""
    import numpy as np

    b = idx.shape[0]
    flat = (idx + (np.arange(b)[:, None] * n)).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def _ratio(num: Any, den: Any) -> Any:
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def accuracy(y: Array, p: Array, c: Array) -> Any:
    return c @ (y == p).astype(float) / y.shape[0]


def _tp_fp_fn(y: Array, p: Array, c: Array) -> tuple[Any, Any, Any]:
    pos, pred = y == 1, p == 1
    return (
        c @ (pos & pred).astype(float),
        c @ (~pos & pred).astype(float),
        c @ (pos & ~pred).astype(float),
    )


def precision(y: Array, p: Array, c: Array) -> Any:
    tp, fp, _ = _tp_fp_fn(y, p, c)
    return _ratio(tp, tp + fp)


def recall(y: Array, p: Array, c: Array) -> Any:
    tp, _, fn = _tp_fp_fn(y, p, c)
    return _ratio(tp, tp + fn)


def f1(y: Array, p: Array, c: Array) -> Any:
    tp, fp, fn = _tp_fp_fn(y, p, c)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def log_loss(y: Array, s: Array, c: Array) -> Any:
    import numpy as np

    eps = np.finfo(np.float64).eps
    s = np.clip(s, eps, 1 - eps)
    return c @ -(y * np.log(s) + (1 - y) * np.log1p(-s)) / y.shape[0]


def mse(y: Array, p: Array, c: Array) -> Any:
    return c @ ((y - p) ** 2) / y.shape[0]


def rmse(y: Array, p: Array, c: Array) -> Any:
    import numpy as np

    return np.sqrt(mse(y, p, c))


def mae(y: Array, p: Array, c: Array) -> Any:
    import numpy as np

    return c @ np.abs(y - p) / y.shape[0]


def mape(y: Array, p: Array, c: Array) -> Any:
    import numpy as np

    return c @ (np.abs(y - p) / np.maximum(np.abs(y), 2.220446049250313e-16)) / y.shape[0]


def r2(y: Array, p: Array, c: Array) -> Any:
    import numpy as np

    n = y.shape[0]
    ss_res = c @ ((y - p) ** 2)
    mean = c @ y / n
    ss_tot = c @ (y**2) - n * mean**2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 1e-12, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)


def roc_auc(y: Array, s: Array, c: Array) -> Any:
    # Mann-Whitney U with counts as weights: a positive beats every negative
    # scored lower and ties with those scored the same (one half each).
    import numpy as np

    order = np.argsort(s, kind="stable")
    s_sorted, pos_sorted = s[order], (y[order] == 1)
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    w = c[:, order]
    pos_w = np.add.reduceat(np.where(pos_sorted, w, 0.0), starts, axis=1)
    neg_w = np.add.reduceat(np.where(pos_sorted, 0.0, w), starts, axis=1)
    below = np.cumsum(neg_w, axis=1) - neg_w
    u = np.sum(pos_w * (below + 0.5 * neg_w), axis=1)
    n_pos, n_neg = pos_w.sum(axis=1), neg_w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)
