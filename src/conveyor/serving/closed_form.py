"""A fitted scikit-learn linear model's prediction as its formula, without the per-call checks.

scikit-learn's ``predict`` on one row of a linear model is about 120 us, of
which the arithmetic (a dot product, an intercept, an argmax) is 3 us: the
rest is input validation (array conversion, finiteness, feature count and
names, the array-API namespace) that a server has already done once per
request (the signature check: the columns, their order and their types). For
the linear estimators whose ``predict`` is scikit-learn's generic one
(LogisticRegression, LinearSVC, SGDClassifier, Perceptron, LinearRegression;
an estimator or subclass with its own ``predict`` or decision function, such
as Ridge, RidgeClassifier or ElasticNet, is left to it) this module returns the
same arithmetic on the same arrays, in the same order, so the answers are the
model's to the bit:

    classifier (LinearClassifierMixin): scores = X @ coef_.T + intercept_
        one column -> classes_[scores > 0]; several -> classes_[argmax(scores)]
    regressor (LinearModel):            X @ coef_(.T) + intercept_

A Pipeline of StandardScalers (or ``passthrough``) ending in such a model is the
scalers' arithmetic (``(X - mean_) / scale_``, as their ``transform`` does it)
then the formula.

A matrix with a NaN or an infinity, or not float64, goes to the model's own
``predict`` (a pipeline's own, for a pipeline), so the caller gets
scikit-learn's answer or error, word for word. The serving pool still
checks the formula against the model on the warm-up rows before it uses it
(:func:`conveyor.serving.pool.matrix_predict`), and ``serving.closed_form:
false`` turns it off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["closed_form"]


def closed_form(estimator: Any) -> Callable[[Any], Any] | None:
    """``predict(matrix)`` for a fitted linear estimator (or scalers then one), or None for
    anything else. A matrix that is not all finite float64 goes to the estimator's own
    ``predict`` (the pipeline's, for a pipeline), so its errors are scikit-learn's."""
    import sys

    if "sklearn" not in sys.modules:  # not a scikit-learn model: nothing to import
        return None
    import numpy as np

    formula = _formula(estimator)
    if formula is None:
        return None
    own = estimator.predict

    def predict(matrix: Any) -> Any:
        if matrix.dtype != np.float64 or not np.isfinite(matrix).all():
            return own(matrix)
        return formula(matrix)

    return predict


def _formula(estimator: Any) -> Callable[[Any], Any] | None:
    """The arithmetic of ``estimator.predict`` on a finite float64 matrix, or None."""
    import numpy as np
    from sklearn.linear_model import _base
    from sklearn.linear_model._base import LinearClassifierMixin, LinearModel
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        return _pipeline(estimator)
    cls = type(estimator)
    coef = getattr(estimator, "coef_", None)
    intercept = getattr(estimator, "intercept_", None)
    if not isinstance(coef, np.ndarray) or coef.dtype.kind != "f" or coef.ndim not in (1, 2):
        return None  # unfitted, or sparse coefficients (sparsify()): the model's own path
    if not isinstance(intercept, np.ndarray | float | int):
        return None
    weights = coef.T if coef.ndim == 2 else coef

    if isinstance(estimator, LinearClassifierMixin):
        if (
            cls.predict is not LinearClassifierMixin.predict
            or cls.decision_function is not LinearClassifierMixin.decision_function
        ):
            return None
        classes = getattr(estimator, "classes_", None)
        if not isinstance(classes, np.ndarray):
            return None

        def classify(matrix: Any) -> Any:
            scores = matrix @ weights + intercept
            if scores.ndim > 1 and scores.shape[1] == 1:
                scores = scores.reshape(-1)
            indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
            return classes.take(indices, axis=0)

        return classify

    if isinstance(estimator, LinearModel):
        # LinearModel's predict, or the one that only documents it for multi-output models
        known = {LinearModel.predict}
        multi = getattr(_base, "MultiOutputLinearModel", None)
        if multi is not None and "predict" in vars(multi):
            known.add(multi.predict)
        if cls.predict not in known or cls._decision_function is not LinearModel._decision_function:
            return None

        def regress(matrix: Any) -> Any:
            return matrix @ weights + intercept

        return regress
    return None


def _pipeline(pipeline: Any) -> Callable[[Any], Any] | None:
    """Scalers then a linear model, or None when any step is something else."""
    import inspect

    from sklearn.pipeline import Pipeline

    # predict is a descriptor (available_if): compare what the class holds, not what it gives
    own = inspect.getattr_static(type(pipeline), "predict", None)
    if own is not Pipeline.__dict__.get("predict") or not pipeline.steps:
        return None
    scalers = []
    for _, step in pipeline.steps[:-1]:
        if step is None or step == "passthrough":
            continue
        scale = _standard_scaler(step)
        if scale is None:
            return None
        scalers.append(scale)
    final = _formula(pipeline.steps[-1][1])
    if final is None:
        return None

    def predict(matrix: Any) -> Any:
        for scale in scalers:
            matrix = scale(matrix)
        return final(matrix)

    return predict


def _standard_scaler(step: Any) -> Callable[[Any], Any] | None:
    """A fitted StandardScaler's ``transform``: the same two operations on a copy (the
    input is never changed)."""
    import numpy as np
    from sklearn.preprocessing import StandardScaler

    if type(step).transform is not StandardScaler.transform or not hasattr(step, "n_features_in_"):
        return None  # another transformer, or not fitted
    mean = getattr(step, "mean_", None) if step.with_mean else None
    scale = getattr(step, "scale_", None) if step.with_std else None
    for wanted, found in ((step.with_mean, mean), (step.with_std, scale)):
        if wanted and not (isinstance(found, np.ndarray) and found.dtype == np.float64):
            return None

    def transform(matrix: Any) -> Any:
        out = matrix - mean if mean is not None else matrix.copy()
        if scale is not None:
            out /= scale
        return out

    return transform
