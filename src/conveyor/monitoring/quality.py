"""Model quality from ground truth: predictions joined to their feedback, scored per window.

::

    from conveyor.monitoring.quality import concept_drift, quality_report

    week = now - timedelta(days=7)
    report = quality_report(project, "fraud", since=week, window=timedelta(days=1))
    report.windows[0]
    # {"model": "fraud", "version": "3", "arm": "champion", "window": "2026-12-04T00:00:00+00:00",
    #  "predictions": 9120, "labelled": 2210, "coverage": 0.242, "overwritten": 3,
    #  "accuracy": 0.94, "roc_auc": 0.91, ..., "value_sum": 18250.0, "value_mean": 8.26}
    drift = concept_drift(project, "fraud")          # the last day against the version's holdout
    drift.detected, drift.drop, (drift.low, drift.high)

A prediction is scored in the window of its own time, whenever its label arrived
(:mod:`conveyor.monitoring.feedback` says how records are joined: by request id, or by
entity key and time; the last record per prediction counts). The metrics are those of
:mod:`conveyor.checks.metrics`, the functions the training gates use.

What a model answered (the ``prediction`` event's ``output``, one entry per request row)
is read by the task (``monitoring.quality.models.<model>``, else inferred):

- **binary**: a probability per row (of ``classes[1]``), or two per row; a label per row
  gives the label metrics only. Labels from scores: ``score >= threshold`` (0.5).
- **multiclass**: k probabilities per row (columns are ``classes``, default 0..k-1), the
  predicted class their argmax; or a label per row.
- **regression**: a number per row.
- **ranking**: a request is a query and its rows the items, each output a score; labels
  are relevances, and a labelled query's rows without feedback have relevance 0.

A model answering named outputs (``{"label": [...], "proba": [...]}``) is read through
``output`` in its settings, else its probabilities, else its first output.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError
from conveyor.monitoring.feedback_join import (
    Labelled,
    labelled,
    quarantined,
    window_bounds,
    window_us,
)

if TYPE_CHECKING:
    from conveyor.checks.metrics import Task
    from conveyor.monitoring.quality_settings import ModelQualitySpec
    from conveyor.project import Project

__all__ = [
    "ConceptDrift",
    "Labelled",
    "QualityReport",
    "concept_drift",
    "labelled",
    "quality_metric",
    "quality_report",
    "quarantined",
    "record_concept_drift",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "binary": (
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "log_loss",
        "calibration_error",
    ),
    "multiclass": (
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "log_loss",
        "calibration_error",
    ),
    "regression": ("mae", "rmse", "r2", "mape"),
    "ranking": ("ndcg@10", "map@10"),
}

# -- scoring -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Read:
    """How a model's outputs are read: the task, the classes, the metrics that apply."""

    task: Task
    scores: bool  # outputs are probabilities / scores (score metrics apply)
    classes: list[Any] | None
    metrics: tuple[str, ...]
    output: str | None
    threshold: float


def _model_spec(project: Project, model: str) -> ModelQualitySpec:
    from conveyor.monitoring.quality_settings import ModelQualitySpec
    from conveyor.monitoring.settings import monitoring_of

    return monitoring_of(project.spec).quality.models.get(model) or ModelQualitySpec()


def _pick(output: Any, name: str | None) -> Any:
    if not isinstance(output, dict):
        return output
    if name is not None:
        if name not in output:
            raise InvalidInputError(
                f"the model answers outputs {sorted(output)}, not {name!r} "
                "(monitoring.quality.models.<model>.output)",
                field="output",
            )
        return output[name]
    for candidate in ("proba", "probabilities", "probability", "scores", "score"):
        if candidate in output:
            return output[candidate]
    return next(iter(output.values()))


def _reading(
    spec: ModelQualitySpec,
    outputs: Sequence[Any],
    labels: Sequence[Any],
    metrics: Sequence[str] | None,
) -> _Read:
    """The task and metrics for these outputs and labels (see the module)."""
    from conveyor.checks.metrics import metric

    vectors = any(isinstance(o, list) for o in outputs)
    numbers = all(isinstance(o, int | float) and not isinstance(o, bool) for o in outputs)
    task = spec.task
    if task is None:
        label_set = {lab for lab in labels if lab is not None}
        if vectors:
            width = max(len(o) for o in outputs if isinstance(o, list))
            task = "binary" if width <= 2 else "multiclass"
        elif label_set and label_set <= {0, 1} and numbers:
            task = "binary"
        elif (
            label_set
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in label_set)
            and numbers
            and not (_whole(label_set) and _whole(outputs))  # whole numbers: class ids
        ):
            task = "regression"
        else:
            # Labels other than 0/1 without classes in the spec: which one is positive is
            # unknown, so they are scored as classes (macro averages), never guessed.
            binary = spec.classes is not None and len(spec.classes) == 2
            task = "binary" if binary else "multiclass"
    if task == "ranking" or task == "regression":
        scores = numbers
    elif task == "binary":
        scores = vectors or (numbers and not all(o in (0, 1) for o in outputs))
    else:
        scores = vectors
    names = tuple(metrics or spec.metrics or DEFAULT_METRICS[task])
    usable = []
    for name in names:
        m = metric(name)
        if task not in m.tasks:
            raise InvalidInputError(
                f"metric {name!r} does not apply to {task} tasks (it applies to: "
                f"{', '.join(m.tasks)})",
                field="metrics",
            )
        if m.needs == "score" and not scores and task in ("binary", "multiclass"):
            continue  # labels only: the score metrics cannot be computed
        usable.append(name)
    return _Read(task, scores, spec.classes, tuple(usable), spec.output, spec.threshold)


def _whole(values: Any) -> bool:
    """Every value an int (class ids), not a float: 2.0 from JSON is a regression value."""
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _labels(values: Sequence[Any]) -> Any:
    """Labels as an array: numbers as they are (1.0 equals the class 1), anything else as
    objects made one type by :func:`_label`."""
    import numpy as np

    if all(isinstance(v, int | float) for v in values):  # bools are ints
        return np.asarray(values, dtype=np.float64)
    return np.asarray([_label(v) for v in values], dtype=object)


def _scores(outputs: Sequence[Any]) -> Any:
    """Binary scores: P(positive) per row, from a number or both classes' probabilities."""
    import numpy as np

    try:
        s = np.asarray(outputs, dtype=np.float64)
    except ValueError:  # rows of different shapes
        return np.asarray([float(o[-1]) if isinstance(o, list) else float(o) for o in outputs])
    return s[:, -1] if s.ndim == 2 else s


def _arrays(read: _Read, outputs: Sequence[Any], labels: Sequence[Any]) -> tuple[Any, Any, Any]:
    """(y, scores or None, predicted labels or values) for one group."""
    import numpy as np

    if read.task == "regression":
        values = np.asarray(outputs, dtype=np.float64)
        return np.asarray(labels, dtype=np.float64), values, values
    y = _labels(labels)
    if read.task == "binary":
        classes = read.classes or [0, 1]
        if read.scores:
            s = _scores(outputs)
            chosen = np.where(s >= read.threshold, 1, 0)
            predicted = np.asarray([_label(c) for c in classes], dtype=object)[chosen]
            if y.dtype != object:
                predicted = predicted.astype(np.float64)
            return y, s, predicted
        return y, None, _labels(outputs)
    # multiclass
    if read.scores:
        s = np.asarray(outputs, dtype=float)
        classes = read.classes or list(range(s.shape[1]))
        predicted = np.asarray([_label(c) for c in classes], dtype=object)[np.argmax(s, axis=1)]
        if y.dtype != object:
            predicted = predicted.astype(np.float64)
        return y, s, predicted
    return y, None, _labels(outputs)


def _scorable(read: _Read, found: Labelled, indices: Sequence[int]) -> list[int]:
    """The rows whose label can be scored: one of the classes when the model answers
    probabilities (their columns are the classes), any label otherwise."""
    if read.task not in ("binary", "multiclass") or not read.scores:
        return list(indices)
    classes = read.classes
    if classes is None:
        if read.task == "binary":
            classes = [0, 1]
        else:
            widths = (
                len(o)
                for i in indices
                if isinstance(o := _pick(found.output[i], read.output), list)
            )
            classes = list(range(max(widths, default=0)))
    # A set: 1.0 and True find the class 1 (equal hashes), as _label makes them.
    allowed = {_label(c) for c in classes}
    labels = found.label
    return [i for i in indices if labels[i] is not None and labels[i] in allowed]


def _label(value: Any) -> Any:
    """Labels as one type: 1.0 is the class 1, True is 1."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _compute(read: _Read, name: str, y: Any, s: Any, predicted: Any) -> Any:
    """One metric on the arrays (a leading axis scores each resample)."""
    from conveyor.checks.metrics import metric

    m = metric(name)
    classes = read.classes
    if read.task == "regression":
        return m(y, predicted, task="regression")
    if read.task == "binary":
        cls = classes or [0, 1]
        chosen = s if m.needs == "score" else predicted
        return m(y, chosen, task="binary", classes=cls)
    if m.needs == "score":
        return m(y, s, task="multiclass", classes=classes or list(range(s.shape[-1])))
    return m(y, predicted, task="multiclass")


def _score(read: _Read, name: str, y: Any, s: Any, predicted: Any) -> float | None:
    """One metric of one group; None where it is undefined (NaN) or not computable."""
    try:
        value = float(_compute(read, name, y, s, predicted))
    except InvalidInputError:
        return None
    return None if math.isnan(value) else value


def _ranking_matrices(found: Labelled, indices: Sequence[int], read: _Read) -> tuple[Any, Any]:
    """(relevance, scores) as (queries, items) matrices, NaN padding; a labelled query's
    rows without feedback have relevance 0."""
    import numpy as np

    queries: dict[str, dict[int, float]] = defaultdict(dict)
    for i in indices:
        queries[found.request_id[i]][found.row[i]] = float(found.label[i])
    width = max(len(found.outputs_of(q)) for q in queries)
    rel = np.full((len(queries), width), np.nan)
    sc = np.full((len(queries), width), np.nan)
    for qi, (request_id, labels) in enumerate(queries.items()):
        outs = found.outputs_of(request_id)
        sc[qi, : len(outs)] = [float(_pick(o, read.output)) for o in outs]
        rel[qi, : len(outs)] = [labels.get(r, 0.0) for r in range(len(outs))]
    return rel, sc


def _group_scores(read: _Read, found: Labelled, indices: Sequence[int]) -> dict[str, float | None]:
    from conveyor.checks.metrics import metric

    if read.task == "ranking":
        rel, sc = _ranking_matrices(found, indices, read)
        out = {}
        for name in read.metrics:
            value = float(metric(name)(rel, sc, task="ranking"))
            out[name] = None if math.isnan(value) else value
        return out
    outputs = [_pick(found.output[i], read.output) for i in indices]
    labels = [found.label[i] for i in indices]
    keep = [
        j
        for j, (o, lab) in enumerate(zip(outputs, labels, strict=True))
        if o is not None and lab is not None
    ]
    if not keep:
        return dict.fromkeys(read.metrics)
    y, s, predicted = _arrays(read, [outputs[j] for j in keep], [labels[j] for j in keep])
    return {name: _score(read, name, y, s, predicted) for name in read.metrics}


# -- the report ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QualityReport:
    """Quality per model, version, arm and window (see the module)."""

    model: str
    since: datetime
    until: datetime
    window: timedelta
    task: str | None
    metrics: list[str]
    windows: list[dict[str, Any]]
    feedback: dict[str, int]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "window_s": self.window.total_seconds(),
            "task": self.task,
            "metrics": self.metrics,
            "windows": self.windows,
            "feedback": self.feedback,
            "seconds": round(self.seconds, 4),
            "notes": self.notes,
        }


def quality_report(
    project: Project,
    model: str,
    *,
    since: datetime,
    until: datetime | None = None,
    window: timedelta | None = None,
    version: str | int | None = None,
    metrics: Sequence[str] | None = None,
) -> QualityReport:
    """Per version, arm and window (default ``monitoring.quality.window``): predictions,
    labelled predictions, coverage, overwritten labels, each metric, and the business
    value's sum and mean (see the module)."""
    from conveyor.durations import parse_duration
    from conveyor.monitoring.settings import monitoring_of

    started = time.perf_counter()
    spec = monitoring_of(project.spec).quality
    window = window or parse_duration(spec.window, "monitoring.quality.window")
    since, until = window_bounds(since, until)
    width = window_us(window)
    found = labelled(
        project,
        model,
        since=since,
        until=until,
        version=None if version is None else str(version),
        window=window,
    )
    notes: list[str] = []
    groups: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for i in range(len(found)):
        groups[(found.version[i], found.arm[i], found.time_us[i] // width * width)].append(i)
    read: _Read | None = None
    spec_of_model = _model_spec(project, model)
    labelled_outputs = [_pick(o, spec_of_model.output) for o in found.output if o is not None]
    if found.label:
        read = _reading(spec_of_model, labelled_outputs, found.label, metrics)
    elif metrics:
        for name in metrics:
            from conveyor.checks.metrics import metric

            metric(name)  # an unknown name is an error even with nothing to score
    windows = []
    unknown = 0
    for key in sorted(set(found.predicted) | set(groups), key=lambda k: (k[2], k[0], k[1])):
        ver, arm, w = key
        members = groups.get(key, [])
        predicted = found.predicted.get(key, 0)
        row: dict[str, Any] = {
            "model": model,
            "version": ver,
            "arm": arm,
            "window": (_EPOCH + timedelta(microseconds=w)).isoformat(),
            "predictions": predicted,
            "labelled": len(members),
            "coverage": round(len(members) / predicted, 6) if predicted else None,
            "overwritten": sum(found.overwritten[i] for i in members),
        }
        if read is not None:
            scored = _scorable(read, found, members)
            unknown += sum(1 for i in members if found.label[i] is not None) - len(scored)
            row.update(
                _group_scores(read, found, scored) if scored else dict.fromkeys(read.metrics)
            )
        values = [v for i in members if (v := found.value[i]) is not None]
        row["value_sum"] = float(sum(values)) if values else None
        row["value_mean"] = float(sum(values) / len(values)) if values else None
        windows.append(row)
    if unknown:
        notes.append(
            f"{unknown} labels are none of the classes the model's probabilities are for, and "
            "were left out: set monitoring.quality.models.<model>.classes"
        )
    if read is None:
        notes.append("no labelled prediction in the range: metrics need feedback")
    elif read.task in ("binary", "multiclass") and not read.scores:
        notes.append(
            "the model answers labels, not probabilities: score metrics (roc_auc, log_loss, "
            "calibration_error) are left out"
        )
    return QualityReport(
        model=model,
        since=since,
        until=until,
        window=window,
        task=None if read is None else read.task,
        metrics=[] if read is None else list(read.metrics),
        windows=windows,
        feedback={
            "records": found.feedback_records,
            "joined": len(found),
            "overwritten": sum(found.overwritten),
        },
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def quality_metric(name: str) -> Any:
    """``fn(project, model, since, until) -> float | None``: ``name`` over every labelled
    prediction of the model in the range (every version and arm); None without labels.
    What the alert rules' ``quality.<metric>`` reads."""
    from conveyor.checks.metrics import metric

    metric(name)  # unknown: an error now, not at the first evaluation

    def value(project: Project, model: str, since: datetime, until: datetime) -> float | None:
        found = labelled(project, model, since=since, until=until)
        if not len(found):
            return None
        spec = _model_spec(project, model)
        outputs = [_pick(o, spec.output) for o in found.output if o is not None]
        read = _reading(spec, outputs, found.label, [name])
        if not read.metrics:
            return None
        rows = _scorable(read, found, range(len(found)))
        return _group_scores(read, found, rows)[name] if rows else None

    value.__name__ = f"quality_{name}"
    return value


# -- concept drift -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConceptDrift:
    """A recent window's quality against a reference, with a bootstrap interval of the drop.

    ``drop`` is how much worse the window is (positive: worse, whichever way the metric
    goes); ``low``/``high`` its interval. ``status``: ``drift`` (the drop is significant,
    its interval above 0, and at least ``min_drop``), ``ok``, or ``insufficient`` (too few
    labels, or nothing to compare with)."""

    model: str
    version: str | None
    metric: str
    since: datetime
    until: datetime
    labelled: int
    current: float | None
    reference: float | None
    reference_source: str
    drop: float | None
    low: float | None
    high: float | None
    min_drop: float
    confidence: float
    status: str
    detail: str

    @property
    def detected(self) -> bool:
        return self.status == "drift"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "metric": self.metric,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "labelled": self.labelled,
            "current": self.current,
            "reference": self.reference,
            "reference_source": self.reference_source,
            "drop": self.drop,
            "interval": [self.low, self.high],
            "min_drop": self.min_drop,
            "confidence": self.confidence,
            "status": self.status,
            "detected": self.detected,
            "detail": self.detail,
        }

    def to_check(self) -> Any:
        """As a :class:`~conveyor.checks.result.CheckResult` (passed unless drift)."""
        from conveyor.checks.result import CheckResult

        return CheckResult(
            f"concept_drift.{self.metric}",
            not self.detected,
            observed={
                "current": self.current,
                "drop": self.drop,
                "interval": [self.low, self.high],
            },
            threshold={"reference": self.reference, "min_drop": self.min_drop},
            detail=self.detail,
            severity="error" if self.detected else "warning",
        )


def concept_drift(
    project: Project,
    model: str,
    *,
    at: datetime | None = None,
    window: timedelta | None = None,
    metric: str | None = None,
    reference: str | None = None,
    version: str | int | None = None,
    min_drop: float | None = None,
    confidence: float | None = None,
    min_labelled: int | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> ConceptDrift:
    """Judge the labelled predictions of ``[at - window, at)`` against the reference: the
    version's own metric from the registry (``holdout_<metric>``, as training records it)
    or the window before (``monitoring.quality.concept_drift``; arguments override it).

    The interval is a bootstrap of the labelled rows (of the queries, for ranking), and of
    both windows when the reference is a window. The version judged is ``version`` or the
    one with the most labelled predictions in the window."""
    import numpy as np

    from conveyor.checks.metrics import metric as metric_named
    from conveyor.durations import parse_duration
    from conveyor.monitoring.settings import monitoring_of

    settings = monitoring_of(project.spec).quality.concept_drift
    at = at or datetime.now(UTC)
    window = window or parse_duration(settings.window, "monitoring.quality.concept_drift.window")
    min_drop = settings.min_drop if min_drop is None else min_drop
    confidence = settings.confidence if confidence is None else confidence
    need = settings.min_labelled if min_labelled is None else min_labelled
    source = reference or settings.reference
    if source not in ("registry", "window"):
        raise InvalidInputError(
            f"reference is 'registry' or 'window', got {source!r}", field="reference"
        )
    since = at - window
    spec = _model_spec(project, model)
    # The window and the one before it, read once (the one before is the reference when
    # the registry has none).
    found = labelled(
        project,
        model,
        since=since - window,
        until=at,
        version=None if version is None else str(version),
    )
    since_us = int((since - _EPOCH) // timedelta(microseconds=1))
    recent = [i for i in range(len(found)) if found.time_us[i] >= since_us]
    chosen_version = None if version is None else str(version)
    if chosen_version is None and recent:
        counts: dict[str, int] = defaultdict(int)
        for i in recent:
            counts[found.version[i]] += 1
        chosen_version = max(counts, key=lambda v: (counts[v], v))
    rows = [i for i in recent if found.version[i] == chosen_version and found.label[i] is not None]
    name = metric or settings.metric or _default_metric(project, spec)
    m = metric_named(name)

    def result(status: str, detail: str, **values: Any) -> ConceptDrift:
        base: dict[str, Any] = {
            "current": None,
            "reference": None,
            "reference_source": source,
            "drop": None,
            "low": None,
            "high": None,
        }
        base.update(values)
        return ConceptDrift(
            model,
            chosen_version,
            name,
            since,
            at,
            len(rows),
            min_drop=min_drop,
            confidence=confidence,
            status=status,
            detail=detail,
            **base,
        )

    if len(rows) < need:
        return result(
            "insufficient", f"{len(rows)} labelled predictions in the window, fewer than {need}"
        )
    outputs = [_pick(found.output[i], spec.output) for i in rows]
    read = _reading(spec, outputs, [found.label[i] for i in rows], [name])
    if not read.metrics:
        return result("insufficient", f"{name} needs scores and the model answers labels")
    rows = _scorable(read, found, rows)
    if len(rows) < need:
        return result("insufficient", f"{len(rows)} labels are among the model's classes")
    rng = np.random.default_rng(seed)
    current, boot = _bootstrap(read, found, rows, name, resamples, rng)
    ref_value: float | None = None
    ref_boot = None
    ref_source = source
    if source == "registry" and chosen_version is not None:
        ref_value = _registry_metric(project, model, chosen_version, name)
        ref_source = "registry"
    if ref_value is None:
        ref_source = "window"
        ref_rows = [
            i
            for i in range(len(found))
            if found.time_us[i] < since_us
            and found.version[i] == chosen_version
            and found.label[i] is not None
        ]
        ref_rows = _scorable(read, found, ref_rows)
        if len(ref_rows) < need:
            return result(
                "insufficient",
                f"no reference: the registry holds no {name} for version {chosen_version} and "
                f"the window before has {len(ref_rows)} labelled predictions",
                current=current,
                reference_source="window",
            )
        ref_read = _reading(
            spec,
            [_pick(found.output[i], spec.output) for i in ref_rows],
            [found.label[i] for i in ref_rows],
            [name],
        )
        ref_value, ref_boot = _bootstrap(ref_read, found, ref_rows, name, resamples, rng)
    if current is None or ref_value is None:
        return result("insufficient", f"{name} is undefined on the window", reference=ref_value)
    sign = 1.0 if m.greater_is_better else -1.0
    drop = sign * (ref_value - current)
    drops = sign * ((ref_boot if ref_boot is not None else ref_value) - boot)
    drops = drops[~np.isnan(drops)]
    tail = (1 - confidence) / 2
    low, high = (float(x) for x in np.quantile(drops, [tail, 1 - tail]))
    detected = low > 0 and drop >= min_drop
    detail = (
        f"{name} {current:.4f} on {len(rows)} labelled predictions of version {chosen_version} "
        f"against {ref_value:.4f} ({ref_source}): a drop of {drop:.4f}, "
        f"{confidence:.0%} interval [{low:.4f}, {high:.4f}]; "
        + (
            "concept drift"
            if detected
            else "not significant"
            if low <= 0
            else f"significant but under the floor {min_drop}"
        )
    )
    return result(
        "drift" if detected else "ok",
        detail,
        current=current,
        reference=ref_value,
        reference_source=ref_source,
        drop=drop,
        low=low,
        high=high,
    )


def record_concept_drift(
    project: Project, judged: ConceptDrift, *, actor: str | None = None
) -> str:
    """Save the judgment as a report (kind ``concept_drift``, one check) and, when it is
    drift, record ``drift.detected`` (audit), which a model's ``retrain.on_events`` can
    listen for, as the data drift checks do. Returns the report's id."""
    from conveyor.checks.persist import save_report
    from conveyor.checks.result import Report
    from conveyor.data.events import DRIFT_DETECTED

    report = Report(
        f"model:{judged.model}",
        [judged.to_check()],
        kind="concept_drift",
        subject_version=judged.version,
    )
    save_report(project.store, report)
    if judged.detected:
        project.events.record(
            DRIFT_DETECTED,
            subject=judged.model,
            subject_version=judged.version,
            actor=actor,
            payload={
                "reference": f"{judged.metric} {judged.reference:.6g} ({judged.reference_source})",
                "current": f"{judged.metric} {judged.current:.6g} on {judged.labelled} labelled "
                f"predictions, {judged.since.isoformat()} to {judged.until.isoformat()}",
                "report_id": report.id,
                "drifted": [f"concept_drift.{judged.metric}"],
                "compared": {
                    "kind": "concept",
                    "since": judged.since.isoformat(),
                    "until": judged.until.isoformat(),
                    "drop": judged.drop,
                    "interval": [judged.low, judged.high],
                },
            },
        )
    return report.id


def _bootstrap(
    read: _Read, found: Labelled, rows: Sequence[int], name: str, resamples: int, rng: Any
) -> tuple[float | None, Any]:
    """(the metric on ``rows``, its value on ``resamples`` bootstrap resamples)."""
    import numpy as np

    from conveyor.checks.metrics import metric

    m = metric(name)
    if read.task == "ranking":
        rel, sc = _ranking_matrices(found, rows, read)
        point = float(m(rel, sc, task="ranking"))
        idx = rng.integers(0, rel.shape[0], size=(resamples, rel.shape[0]))
        boot = np.asarray(m(rel[idx], sc[idx], task="ranking"), dtype=float)
        return (None if math.isnan(point) else point), boot
    outputs = [_pick(found.output[i], read.output) for i in rows]
    y, s, predicted = _arrays(read, outputs, [found.label[i] for i in rows])
    score = _score(read, name, y, s, predicted)
    n = len(y)
    # Resamples as a leading axis: the metrics are vectorized over it (chunks bound memory).
    chunk = max(1, 4_000_000 // max(n * (s.shape[-1] if s is not None and s.ndim > 1 else 1), 1))
    values = []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        try:
            values.append(
                np.asarray(
                    _compute(read, name, y[idx], None if s is None else s[idx], predicted[idx]),
                    dtype=float,
                )
            )
        except InvalidInputError:
            values.append(np.full(len(idx), np.nan))
    return score, np.concatenate(values)


def _registry_metric(project: Project, model: str, version: str, name: str) -> float | None:
    try:
        found = project.registry.get(model, int(version))
    except (ValueError, LookupError):
        return None
    for key in (f"holdout_{name}", name):
        value = found.metrics.get(key)
        if isinstance(value, int | float) and not math.isnan(value):
            return float(value)
    return None


def _default_metric(project: Project, spec: ModelQualitySpec) -> str:
    if spec.metrics:
        return spec.metrics[0]
    slo = project.spec.slos.quality
    if slo is not None:
        return slo.metric
    if spec.task is not None:
        return DEFAULT_METRICS[spec.task][0]
    return "accuracy"
