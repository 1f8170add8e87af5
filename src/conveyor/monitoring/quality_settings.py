"""The ``monitoring.quality`` section of ``conveyor.yaml``: ground truth and model quality.

::

    monitoring:
      quality:
        horizon: 7d             # entity-key join: a prediction at most this long before its outcome
        window: 1d              # default window of quality reports
        models:
          fraud:
            task: binary        # binary | multiclass | regression | ranking (inferred if unset)
            metrics: [roc_auc, accuracy, f1, calibration_error]
            threshold: 0.5      # a score at or above it predicts classes[1]
          ranker: {task: ranking, metrics: [ndcg@10, map@10]}
        concept_drift:
          cron: "0 * * * *"     # judged and recorded by conveyor pipeline schedule
          metric: null          # default: each model's first metric
          window: 1d            # the recent window judged
          reference: registry   # registry (the version's own metric) | window (the one before)
          min_drop: 0.02        # a drop smaller than this is never drift, however significant
          confidence: 0.95
          min_labelled: 50

Every field can be set from the environment (``CONVEYOR_MONITORING__QUALITY__HORIZON``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = ["ConceptDriftSpec", "ModelQualitySpec", "QualitySpec"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


def _duration(value: Any, field: str) -> str:
    from conveyor.durations import parse_duration

    parse_duration(str(value), field)  # InvalidInputError naming the field if malformed
    return str(value)


class ModelQualitySpec(BaseModel):
    """How one model's predictions are read against its labels."""

    model_config = _STRICT

    task: Literal["binary", "multiclass", "regression", "ranking"] | None = Field(
        None,
        description="binary, multiclass, regression or ranking; unset: inferred from the "
        "outputs and labels (ranking is never inferred).",
    )
    metrics: list[str] | None = Field(
        None,
        description="Metric names (conveyor.checks.metrics, e.g. roc_auc, mape, ndcg@10); "
        "default: every metric of the task the outputs allow.",
    )
    classes: list[str | int | float | bool] | None = Field(
        None,
        description="The classes in the order of the model's probability columns "
        "(default 0..k-1; binary: [0, 1]).",
    )
    threshold: float = Field(
        0.5, gt=0, lt=1, description="Binary scores at or above it predict the positive class."
    )
    output: str | None = Field(
        None,
        description="For a model answering several named outputs: the one to score "
        "(default: probabilities if there are, else the first).",
    )

    @field_validator("metrics")
    @classmethod
    def _known(cls, names: list[str] | None) -> list[str] | None:
        if names is not None:
            from conveyor.checks.metrics import metric

            for name in names:
                metric(name)  # InvalidInputError listing the known ones
        return names


class ConceptDriftSpec(BaseModel):
    """When a drop of quality on labelled traffic counts as concept drift."""

    model_config = _STRICT

    cron: str | None = Field(
        None,
        description="Cron expression (UTC) of scheduled judgments (conveyor pipeline schedule "
        "runs monitoring.concept_drift: each is recorded, drift.detected on drift).",
    )
    metric: str | None = Field(
        None, description="The metric judged (default: the model's first quality metric)."
    )
    window: str = Field("1d", description="The recent window of labelled predictions judged.")
    reference: Literal["registry", "window"] = Field(
        "registry",
        description="registry: the version's own metric from its registration (holdout), "
        "else the window before; window: always the window before the judged one.",
    )
    min_drop: float = Field(
        0.02, ge=0, description="A drop smaller than this is never concept drift."
    )
    confidence: float = Field(
        0.95, gt=0.5, lt=1, description="Confidence of the drop's interval (bootstrap)."
    )
    min_labelled: int = Field(
        50, ge=5, description="Fewer labelled predictions in the window: no judgment."
    )

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        return _duration(value, "monitoring.quality.concept_drift.window")


class QualitySpec(BaseModel):
    """Ground truth (feedback) and model quality over windows."""

    model_config = _STRICT

    horizon: str = Field(
        "7d",
        description="Entity-key feedback joins the latest prediction for the key at most "
        "this long before the outcome; unknown request ids are looked for this far back.",
    )
    window: str = Field("1d", description="Default window of quality reports.")
    models: dict[str, ModelQualitySpec] = Field(
        default_factory=dict, description="Per model: task, metrics, classes, threshold."
    )
    concept_drift: ConceptDriftSpec = Field(default_factory=ConceptDriftSpec)

    @field_validator("horizon", "window")
    @classmethod
    def _durations(cls, value: str, info: ValidationInfo) -> str:
        return _duration(value, f"monitoring.quality.{info.field_name}")
