"""Distillation: a small scikit-learn student trained on a teacher's outputs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from conveyor.errors import InvalidInputError
from conveyor.training.optimize import predictors
from conveyor.training.optimize.report import OptimizationReport, compare

__all__ = ["Distillation", "distill"]


@dataclass(frozen=True, slots=True)
class Distillation:
    """The fitted student and how it compares with its teacher."""

    student: Any
    report: OptimizationReport
    soft_targets: bool


def distill(
    teacher: Any,
    X: Any,
    *,
    student: Any = None,
    holdout_X: Any = None,
    holdout_y: Any = None,
    metric: str | None = None,
    max_depth: int = 6,
    random_state: int = 0,
) -> Distillation:
    """Train ``student`` (a fresh scikit-learn estimator) to mimic ``teacher`` on ``X``.

    For a classifier teacher with probabilities the student learns the soft
    targets: each row appears once per class, weighted by the teacher's
    probability of that class, which is the cross-entropy against the
    teacher's distribution for LogisticRegression and the impurity over it for
    a tree, and keeps the student a plain estimator that exports to ONNX. A
    student whose ``fit`` takes no ``sample_weight`` learns the teacher's
    labels instead (``soft_targets`` is then False). A regressor teacher's
    predictions are the student's targets.

    The default student is a ``DecisionTreeClassifier``/``Regressor`` of depth
    ``max_depth``. The report compares the student with the teacher on
    ``holdout_X`` (``X`` itself when not given, which the report's notes say).
    """
    import numpy as np
    from sklearn.base import clone
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    classifier = predictors.is_classifier(teacher)
    if student is None:
        kind = DecisionTreeClassifier if classifier else DecisionTreeRegressor
        student = kind(max_depth=max_depth, min_samples_leaf=5, random_state=random_state)
    else:
        student = clone(student)
    if bool(predictors.is_classifier(student)) != classifier:
        raise InvalidInputError(
            f"the student {type(student).__name__} must be a "
            f"{'classifier' if classifier else 'regressor'} like the teacher",
            field="student",
        )
    n_rows = predictors.n_rows(X)
    if n_rows == 0:
        raise InvalidInputError("distillation needs rows to learn from", field="X")
    data = predictors.sklearn_input(X)
    soft = False
    if not classifier:
        student.fit(data, np.asarray(predictors.predict(teacher, X), dtype=np.float64))
    elif _accepts_weights(student) and predictors.has_proba(teacher):
        proba = predictors.predict_proba(teacher, X)
        classes = np.asarray(predictors.classes(teacher))
        rows, cols = np.nonzero(proba > 0)  # a class of zero probability adds nothing
        stacked = data.iloc[rows] if hasattr(data, "iloc") else data[rows]
        student.fit(stacked, classes[cols], **{_weight_param(student): proba[rows, cols]})
        soft = True
    else:
        student.fit(data, predictors.predict(teacher, X))
    notes = [
        f"student {type(student).__name__} trained on the teacher's "
        f"{'probabilities' if soft else 'labels' if classifier else 'predictions'} "
        f"over {n_rows} rows"
    ]
    if holdout_X is None:
        holdout_X, holdout_y = X, None
        notes.append("no hold-out set given: compared on the training rows, without a metric")
    report = compare(teacher, student, holdout_X, holdout_y, metric=metric)
    report = replace(report, notes=(*report.notes, *notes))
    return Distillation(student=student, report=report, soft_targets=soft)


def _accepts_weights(student: Any) -> bool:
    from sklearn.utils.validation import has_fit_parameter

    final = student.steps[-1][1] if hasattr(student, "steps") else student
    return bool(has_fit_parameter(final, "sample_weight"))


def _weight_param(student: Any) -> str:
    if hasattr(student, "steps"):
        return f"{student.steps[-1][0]}__sample_weight"
    return "sample_weight"
