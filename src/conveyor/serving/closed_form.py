"""A fitted scikit-learn linear model's prediction as its formula, without the per-call checks.

scikit-learn's ``predict`` on one row of a linear model is about 120 us, of
which the arithmetic (a dot product, an intercept, an argmax) is 3 us: the
rest is input validation (array conversion, finiteness, feature count and
names, the array-API namespace) that a server has already done once per
request (the signature check: the columns, their order and their types).
:func:`closed_form` wraps the formula :mod:`conveyor.registry.formula` reads
off the model (which estimators have one, and why the answers are the
model's to the bit, is documented there).

A matrix with a NaN or an infinity, or not float64, goes to the model's own
``predict`` (a pipeline's own, for a pipeline), so the caller gets
scikit-learn's answer or error, word for word. The serving pool still
checks the formula against the model on the warm-up rows before it uses it
(:func:`conveyor.serving.pool.matrix_predict`), and ``serving.closed_form:
false`` turns it off. A version registered with its formula recorded is
served from that record without unpickling the model
(:meth:`conveyor.serving.pool.ModelPool`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["closed_form", "guarded"]


def closed_form(estimator: Any) -> Callable[[Any], Any] | None:
    """``predict(matrix)`` for a fitted linear estimator (or scalers then one), or None for
    anything else. A matrix that is not all finite float64 goes to the estimator's own
    ``predict`` (the pipeline's, for a pipeline), so its errors are scikit-learn's."""
    from conveyor.registry.formula import extract

    formula = extract(estimator)
    if formula is None:
        return None
    return guarded(formula, lambda: estimator.predict)


def guarded(
    formula: Callable[[Any], Any], own: Callable[[], Callable[[Any], Any]]
) -> Callable[[Any], Any]:
    """``formula`` on finite float64 matrices, the model's own ``predict`` (``own()``, asked
    for only when needed: the model may not be loaded yet) on anything else."""
    import numpy as np

    def predict(matrix: Any) -> Any:
        if matrix.dtype != np.float64 or not np.isfinite(matrix).all():
            return own()(matrix)
        return formula(matrix)

    return predict
