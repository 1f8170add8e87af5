"""What a validation gate looks at: :class:`GateContext`.

::

    ctx = GateContext(model, X_holdout, y_holdout, champion=current, groups=X_holdout["region"])
    gates = [metric_floor(slos.quality), champion_comparison("roc_auc", min_absolute_change=0.01)]
    report = run_gates("model:fraud", gates, ctx)

The context holds the candidate ``model``, a hold-out set training never
saw, and how to get predictions out of a model. Predictions are computed
once per model and kind and shared by every gate of the run.

``predict(model, X)`` returns predicted labels (classification) or values
(regression); the default calls ``model.predict(X)``. ``score(model, X)``
returns the probability of class 1, for ``roc_auc`` and ``log_loss``; the
default is column 1 of ``model.predict_proba(X)``, else
``model.decision_function(X)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from conveyor.checks.result import Report
    from conveyor.config import SLOs
    from conveyor.data.validation.result import ValidationResult

__all__ = ["GateContext", "default_predict", "default_score"]

Which = Literal["model", "champion"]


def default_predict(model: Any, X: Any) -> Any:
    """``model.predict(X)``: the scikit-learn convention."""
    predict = getattr(model, "predict", None)
    if predict is None:
        raise InvalidInputError(
            f"{type(model).__name__} has no predict(); pass GateContext(predict=...)",
            field="predict",
        )
    return predict(X)


def default_score(model: Any, X: Any) -> Any:
    """Probability of class 1: ``predict_proba(X)[:, 1]``, else ``decision_function(X)``."""
    import numpy as np

    proba = getattr(model, "predict_proba", None)
    if proba is not None:
        out = np.asarray(proba(X))
        return out[:, 1] if out.ndim == 2 else out
    decision = getattr(model, "decision_function", None)
    if decision is not None:
        return decision(X)
    raise InvalidInputError(
        f"{type(model).__name__} has neither predict_proba() nor decision_function(); "
        "pass GateContext(score=...) for score metrics (roc_auc, log_loss)",
        field="score",
    )


@dataclass
class GateContext:
    """A candidate model, its hold-out set, and what the gates compare it with.

    - ``model``: the candidate; ``champion``: the model it would replace (None for the first).
    - ``holdout_X``/``holdout_y``: data training never saw (any frame ``predict`` accepts).
    - ``predict``/``score``: how to get labels or values, and class-1 scores, from a model.
    - ``groups``: one group label per hold-out row, for the fairness gate (a
      sequence or array; the fairness gate also takes a column name of ``holdout_X``).
    - ``training_validation``: the data-validation result (or its report) of the training set.
    - ``slos``: the project's SLOs, read by gates built without explicit thresholds.
    """

    model: Any
    holdout_X: Any = None
    holdout_y: Any = None
    predict: Callable[[Any, Any], Any] = default_predict
    score: Callable[[Any, Any], Any] = default_score
    champion: Any = None
    groups: Any = None
    training_validation: ValidationResult | Report | None = None
    slos: SLOs | None = None
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False, compare=False)

    def y(self) -> npt.NDArray[np.float64]:
        """The hold-out truth as a float array (InvalidInputError if there is none)."""

        if ("y", "") not in self._cache:
            if self.holdout_y is None:
                raise InvalidInputError("the gate context has no holdout_y", field="holdout_y")
            self._cache["y", ""] = _numeric(self.holdout_y, "holdout_y")
        y: npt.NDArray[np.float64] = self._cache["y", ""]
        return y

    def predictions(self, which: Which = "model", needs: str = "label") -> npt.NDArray[np.float64]:
        """Predictions of the candidate (or champion) on the hold-out set, computed once."""

        key = (which, "score" if needs == "score" else "label")
        if key not in self._cache:
            model = self.model if which == "model" else self.champion
            if model is None:
                raise InvalidInputError(f"the gate context has no {which}", field=which)
            if self.holdout_X is None:
                raise InvalidInputError("the gate context has no holdout_X", field="holdout_X")
            fn = self.score if key[1] == "score" else self.predict
            out = _numeric(fn(model, self.holdout_X), f"the {which}'s {key[1]}s")
            n = len(self.y())
            if len(out) != n:
                raise InvalidInputError(
                    f"the {which} returned {len(out)} predictions for {n} hold-out rows",
                    field="predict",
                )
            self._cache[key] = out
        result: npt.NDArray[np.float64] = self._cache[key]
        return result


def _numeric(values: Any, what: str) -> npt.NDArray[np.float64]:
    import numpy as np

    try:
        return np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{what} must be numbers (binary classes as 0 and 1), got {exc}",
            field="holdout_y" if what == "holdout_y" else "predict",
        ) from exc
