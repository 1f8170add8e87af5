"""How an optimized model compares with its parent: :func:`compare` and :class:`OptimizationReport`.

Both models predict the same hold-out rows; every number in the report comes
from those predictions. A model is a fitted scikit-learn estimator, an
:class:`~conveyor.training.optimize.OnnxModel` or a ``torch.nn.Module``
(what its outputs mean is in :mod:`conveyor.training.optimize.torch_model`).
The metric is any of :mod:`conveyor.checks.metrics` that applies to the
model's task (binary, multiclass, regression): the gates' own.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from conveyor.checks import CheckResult, Report
from conveyor.checks.metrics import Metric, Task
from conveyor.checks.metrics import metric as metric_named
from conveyor.errors import InvalidInputError
from conveyor.training.optimize import predictors
from conveyor.training.optimize.onnx_model import OnnxModel
from conveyor.training.optimize.torch_model import (
    TorchPredictor,
    TorchTask,
    is_torch_module,
    module_size_bytes,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = ["OptimizationReport", "compare"]


@dataclass(frozen=True, slots=True)
class OptimizationReport:
    """Size, p95 single-row latency and hold-out quality of a parent and a child model.

    ``metric_difference`` is child minus parent. ``max_abs_prediction_difference``
    compares probabilities when both models give them, otherwise regression
    outputs (for classifiers without probabilities: 1.0 when any label differs);
    ``prediction_agreement`` is the share of equal labels (classifiers only).
    Sizes are the ONNX file for an :class:`OnnxModel`, ``torch.save`` of a torch
    module, and the pickle otherwise.
    Latency is the model call on one already-decoded row, on one thread.
    """

    parent: str
    child: str
    metric: str
    greater_is_better: bool
    n_rows: int
    parent_size_bytes: int
    child_size_bytes: int
    parent_p95_latency_ms: float
    child_p95_latency_ms: float
    parent_metric: float | None
    child_metric: float | None
    metric_difference: float | None
    max_abs_prediction_difference: float
    prediction_agreement: float | None
    quantized_weights: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def size_ratio(self) -> float:
        """Child size over parent size (below 1 means smaller)."""
        return self.child_size_bytes / self.parent_size_bytes

    @property
    def metric_drop(self) -> float | None:
        """How much worse the child is on the metric (negative when it is better)."""
        if self.metric_difference is None:
            return None
        return -self.metric_difference if self.greater_is_better else self.metric_difference

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        data["size_ratio"] = self.size_ratio
        return data

    def to_checks(
        self,
        *,
        max_metric_drop: float = 0.01,
        min_agreement: float = 0.99,
        max_prediction_difference: float | None = None,
        require_smaller: bool = False,
        max_latency_ratio: float | None = None,
    ) -> list[CheckResult]:
        """The report as checks.

        A metric drop beyond ``max_metric_drop`` and label agreement below
        ``min_agreement`` fail; a child that is not smaller is a warning unless
        ``require_smaller``; latency is held to ``max_latency_ratio`` times the
        parent's as a warning only, since one machine's timings are noisy.
        """
        checks: list[CheckResult] = []
        drop = self.metric_drop
        if drop is not None:
            checks.append(
                CheckResult(
                    f"{self.metric}_drop",
                    passed=drop <= max_metric_drop,
                    observed=drop,
                    threshold=max_metric_drop,
                    detail=f"{self.metric} {self.parent_metric:.6g} -> {self.child_metric:.6g} "
                    f"on {self.n_rows} hold-out rows",
                )
            )
        if self.prediction_agreement is not None:
            checks.append(
                CheckResult(
                    "prediction_agreement",
                    passed=self.prediction_agreement >= min_agreement,
                    observed=self.prediction_agreement,
                    threshold=min_agreement,
                    detail=f"share of {self.n_rows} rows where {self.child} predicts the same "
                    f"label as {self.parent}",
                )
            )
        if max_prediction_difference is not None:
            checks.append(
                CheckResult(
                    "max_abs_prediction_difference",
                    passed=self.max_abs_prediction_difference <= max_prediction_difference,
                    observed=self.max_abs_prediction_difference,
                    threshold=max_prediction_difference,
                )
            )
        checks.append(
            CheckResult(
                "size_reduced",
                passed=self.child_size_bytes < self.parent_size_bytes,
                observed=self.child_size_bytes,
                threshold=self.parent_size_bytes,
                detail=f"{self.child_size_bytes} bytes against {self.parent_size_bytes} "
                f"(ratio {self.size_ratio:.3f})",
                severity="error" if require_smaller else "warning",
            )
        )
        if max_latency_ratio is not None:
            bound = self.parent_p95_latency_ms * max_latency_ratio
            checks.append(
                CheckResult(
                    "p95_latency",
                    passed=self.child_p95_latency_ms <= bound,
                    observed=self.child_p95_latency_ms,
                    threshold=bound,
                    detail=f"p95 single-row ms: parent {self.parent_p95_latency_ms:.4f}, "
                    f"child {self.child_p95_latency_ms:.4f}",
                    severity="warning",
                )
            )
        if self.quantized_weights is not None:
            checks.append(
                CheckResult(
                    "int8_quantized_weights",
                    passed=self.quantized_weights > 0,
                    observed=self.quantized_weights,
                    threshold=1,
                    detail="; ".join(self.notes),
                    severity="warning",
                )
            )
        return checks

    def to_report(
        self, subject: str, *, subject_version: str | None = None, **thresholds: Any
    ) -> Report:
        """A :class:`~conveyor.checks.Report` of kind ``optimization``, ready to persist."""
        return Report.of(
            subject,
            self.to_checks(**thresholds),
            kind="optimization",
            subject_version=subject_version,
        )


def compare(
    parent: Any,
    child: Any,
    holdout_X: Any,
    holdout_y: Any = None,
    *,
    metric: str | Metric | None = None,
    latency_rows: int = 200,
    parent_name: str | None = None,
    child_name: str | None = None,
    task: TorchTask | None = None,
) -> OptimizationReport:
    """Measure ``child`` against ``parent`` on the same hold-out rows.

    ``metric`` (a name of :mod:`conveyor.checks.metrics`, or a Metric)
    defaults to ``roc_auc`` for a classifier with probabilities, ``accuracy``
    for one without, and ``r2`` for a regressor (the training flow's defaults). Without
    ``holdout_y`` only the agreement and prediction difference are measured.
    ``latency_rows`` rows are timed one at a time for each model.

    A torch module (or a :class:`~conveyor.training.optimize.PruneResult`) is
    measured as ``task`` says: ``"classification"`` for logits,
    ``"regression"`` for values, or None for classification when it has more
    than one output column (see :mod:`conveyor.training.optimize.torch_model`).
    """
    import numpy as np

    parent = predictors.prepare(parent, holdout_X, task)
    child = predictors.prepare(child, holdout_X, task)
    classifier = predictors.is_classifier(parent)
    if classifier != predictors.is_classifier(child):
        raise InvalidInputError(
            f"cannot compare a {'classifier' if classifier else 'regressor'} "
            f"{predictors.name(parent)} with {predictors.name(child)}, which is not",
        )
    both_proba = classifier and predictors.has_proba(parent) and predictors.has_proba(child)
    if metric is None:
        # The training flow's headline metric when the spec names none (a version and its
        # optimized child then report the same metric side by side).
        from conveyor.training.settings import default_metric

        metric = default_metric("classification" if classifier else "regression", scores=both_proba)
    chosen = metric_named(metric)
    classes = predictors.classes(parent) if classifier else None
    metric_task = chosen.check_task(_task(classifier, classes))  # InvalidInputError if not
    if chosen.needs == "score" and not both_proba:
        raise InvalidInputError(
            f"metric {chosen.name!r} needs class probabilities from both models", field="metric"
        )
    n_rows = predictors.n_rows(holdout_X)
    if n_rows == 0:
        raise InvalidInputError("the hold-out set has no rows", field="holdout_X")
    parent_pred, child_pred = (
        predictors.predict(parent, holdout_X),
        predictors.predict(child, holdout_X),
    )
    parent_proba = predictors.predict_proba(parent, holdout_X) if both_proba else None
    child_proba = predictors.predict_proba(child, holdout_X) if both_proba else None
    if parent_proba is not None and child_proba is not None:
        max_diff = float(np.max(np.abs(parent_proba - child_proba)))
    elif classifier:  # labels without probabilities: 1.0 when any label differs
        max_diff = float(np.any(parent_pred != child_pred))
    else:
        diff = np.asarray(parent_pred, dtype=np.float64) - np.asarray(child_pred, dtype=np.float64)
        max_diff = float(np.max(np.abs(diff)))
    agreement = float(np.mean(parent_pred == child_pred)) if classifier else None

    parent_metric = child_metric = difference = None
    if holdout_y is not None:
        y = np.asarray(holdout_y)
        if len(y) != n_rows:
            raise InvalidInputError(
                f"holdout_y has {len(y)} values for {n_rows} hold-out rows", field="holdout_y"
            )
        parent_metric = _score(chosen, metric_task, y, parent_pred, parent_proba, classes)
        child_metric = _score(chosen, metric_task, y, child_pred, child_proba, classes)
        difference = child_metric - parent_metric
    notes = tuple(getattr(child, "notes", ()))
    return OptimizationReport(
        parent=parent_name or predictors.name(parent),
        child=child_name or predictors.name(child),
        metric=chosen.name,
        greater_is_better=chosen.greater_is_better,
        n_rows=n_rows,
        parent_size_bytes=size_of(parent),
        child_size_bytes=size_of(child),
        parent_p95_latency_ms=p95_latency_ms(parent, holdout_X, rows=latency_rows),
        child_p95_latency_ms=p95_latency_ms(child, holdout_X, rows=latency_rows),
        parent_metric=parent_metric,
        child_metric=child_metric,
        metric_difference=difference,
        max_abs_prediction_difference=max_diff,
        prediction_agreement=agreement,
        quantized_weights=getattr(child, "quantized_weights", None),
        notes=notes,
    )


def size_of(model: Any) -> int:
    """Bytes of the ONNX file, of ``torch.save`` of a torch module, or of the pickle."""
    if isinstance(model, OnnxModel):
        return model.size_bytes
    if isinstance(model, TorchPredictor):
        return module_size_bytes(model.module)
    if is_torch_module(model):
        return module_size_bytes(model)
    return len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))


def p95_latency_ms(model: Any, X: Any, *, rows: int = 200) -> float:
    """95th percentile of the time to predict one row, over up to ``rows`` rows, on one thread.

    Each row is decoded before the clock starts, so the figure is the model's
    and not the frame conversion's.
    """
    import numpy as np
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    count = min(rows, predictors.n_rows(X))
    call: Callable[[Any], Any]
    singles: list[Any]
    scope: AbstractContextManager[Any] = nullcontext()
    model = predictors.prepare(model, X)
    if isinstance(model, TorchPredictor):
        tensor = model.tensor(predictors.head(X, count))
        singles = [tensor[i : i + 1] for i in range(count)]
        call, scope = model.run, model.timing()
    elif isinstance(model, OnnxModel):
        feeds = model.feeds(predictors.head(X, count))
        singles = [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(count)]
        call = model.run
    else:
        data = predictors.sklearn_input(predictors.head(X, count))
        singles = [
            data.iloc[i : i + 1] if hasattr(data, "iloc") else data[i : i + 1] for i in range(count)
        ]
        call = model.predict_proba if predictors.has_proba(model) else model.predict
    timings = np.empty(count, dtype=np.int64)
    with threadpool_limits(limits=1), scope:
        for single in singles[: min(5, count)]:  # warm caches and lazy initialisation
            call(single)
        for i, single in enumerate(singles):
            start = time.perf_counter_ns()
            call(single)
            timings[i] = time.perf_counter_ns() - start
    return float(np.percentile(timings, 95)) / 1e6


def _task(classifier: bool, classes: Any) -> Task:
    if not classifier:
        return "regression"
    return "multiclass" if classes is not None and len(classes) > 2 else "binary"


def _score(
    chosen: Metric,
    task: Task,
    y: np.ndarray,
    pred: np.ndarray,
    proba: np.ndarray | None,
    classes: Any,
) -> float:
    if chosen.needs == "score":
        assert proba is not None
        return float(chosen(y, proba, task=task, classes=classes))
    return float(chosen(y, pred, task=task, classes=classes))
