"""The training flow's section of ``conveyor.yaml``: ``models:``.

::

    models:
      fraud:
        train: model:fit
        dataset: loans
        features: [amount, age]
        target: default
        gates: [{quality_floor: {}}, {beats_champion: {}}]
      churn:
        train: model:fit
        dataset: churn_labels                # entity keys, a time and the label
        feature_service: churn               # joined point-in-time from the feature store
        entity_time: as_of                   # the time each row's features are read as of
        target: churned                      # features: the service's, unless listed

Every field can be set from the environment, ``CONVEYOR_MODELS__FRAUD__AUTO_PROMOTE=true``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.errors import NotFoundError

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = [
    "DEFAULT_METRICS",
    "SECTIONS",
    "HoldoutSpec",
    "ModelSpec",
    "RetrainSpec",
    "default_metric",
    "model_spec",
    "models_of",
]


#: The metric a model is judged by, by task, when ``slos.quality`` names none (a version's
#: headline ``holdout_<metric>``); ``conveyor init --template TASK`` writes it there too.
DEFAULT_METRICS: dict[str, str] = {"classification": "roc_auc", "regression": "r2"}


def default_metric(task: Literal["classification", "regression"], *, scores: bool = True) -> str:
    """The metric a model of ``task`` is judged by when the spec names none: roc_auc for a
    classifier (accuracy for one without scores, which roc_auc reads), r2 for a regression.
    """
    name = DEFAULT_METRICS[task]
    return name if scores or task != "classification" else "accuracy"


class HoldoutSpec(BaseModel):
    """How the rows training never sees are chosen (the gates judge on them).

    - ``time``: the latest ``fraction`` of rows by ``column`` (no look-ahead);
    - ``hash``: rows whose ``column`` value hashes into ``fraction`` (an entity
      such as a customer stays on one side in every version);
    - ``random``: a seeded random ``fraction`` of rows.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: Literal["time", "hash", "random"] = Field(
        "random",
        description="time: the latest fraction of rows by column (no look-ahead); hash: rows "
        "whose column value hashes into fraction (an entity stays on one side); random: a "
        "seeded random fraction.",
    )
    column: str | None = Field(None, description="The time or key column (time and hash).")
    fraction: float = Field(0.2, gt=0, lt=1, description="Share of rows held out.")
    seed: int = Field(0, ge=0, description="Seed of the random split.")

    @model_validator(mode="after")
    def _column_when_needed(self) -> HoldoutSpec:
        if self.by != "random" and not self.column:
            raise ValueError(f"a holdout by {self.by} needs a column")
        return self


class RetrainSpec(BaseModel):
    """When a model retrains by itself (``conveyor pipeline schedule`` runs it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str | None = Field(None, description="Cron expression, e.g. '0 3 * * *'.")
    on_events: list[str] = Field(
        default_factory=list,
        description="Event kinds that trigger a retraining, e.g. drift.detected, alert.fired.",
    )
    on_new_data: bool = Field(False, description="Retrain when the dataset gets a new version.")
    incremental: bool = Field(
        False,
        description="Continue the champion with partial_fit on the rows it has not seen "
        "(estimators with partial_fit only) instead of training from scratch.",
    )


class ModelSpec(BaseModel):
    """A trainable model: entry point, data, hold-out, gates and retraining.

    ``train`` is ``module:function`` (importable from the project folder),
    called as ``function(X, y, *, seed, **params)`` and returning a fitted
    model; ``prepare`` (optional) turns the dataset's rows into the frame
    ``features`` and ``target`` are read from, the same for training and the
    hold-out. With ``feature_service``, the dataset is an entity/label frame
    (join keys, ``entity_time`` and the label) and the service's features are
    joined to it point-in-time before ``prepare``; the version records the
    service's version and the data set versions behind it, and is served by
    entity key (the online store supplies the features). ``gates`` is a list
    of ``{name: {options}}`` (see :mod:`conveyor.training.flow`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: str = Field(description="Training entry point, module:function.", min_length=3)
    prepare: str | None = Field(None, description="Optional frame preparation, module:function.")
    dataset: str = Field(
        description="The data set whose latest version trains the model (with feature_service: "
        "the entity/label frame)."
    )
    features: list[str] = Field(
        default_factory=list,
        description="Input columns, in order (with feature_service: default the service's "
        "features, in its order).",
    )
    feature_service: str | None = Field(
        None,
        description="A feature service (features.services) whose features are joined to the "
        "data set's rows point-in-time; the model is then served by entity key.",
    )
    entity_time: str = Field(
        "event_timestamp",
        description="With feature_service: the data set's column each row's features are read "
        "as of.",
    )
    target: str = Field(description="The label column.")
    task: Literal["classification", "regression"] | None = Field(
        None,
        description="How a PyTorch model's outputs read (one output column is a regression "
        "unless this says classification); scikit-learn models know their own.",
    )
    holdout: HoldoutSpec = Field(default_factory=HoldoutSpec)
    params: dict[str, Any] = Field(default_factory=dict, description="Passed to train().")
    groups: str | None = Field(None, description="Column of group labels for the fairness gate.")
    gates: list[dict[str, dict[str, Any]]] = Field(
        default_factory=list, description="Gates run on every candidate: [{name: {options}}]."
    )
    auto_promote: bool = Field(
        False, description="Make a candidate champion by itself when its gates pass."
    )
    retrain: RetrainSpec = Field(default_factory=RetrainSpec)

    @model_validator(mode="after")
    def _features_named(self) -> ModelSpec:
        if not self.features and self.feature_service is None:
            raise ValueError("features: name the input columns (or a feature_service)")
        return self

    @field_validator("train", "prepare")
    @classmethod
    def _entry_point(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", value):
            raise ValueError(f"expected module:function, got {value!r}")
        return value


SECTIONS: dict[str, Any] = {
    "models": (
        dict[str, ModelSpec],
        Field(default_factory=dict, description="Trainable models by name."),
    ),
}


def models_of(spec: ProjectSpec) -> dict[str, ModelSpec]:
    """The ``models:`` section."""
    models: dict[str, ModelSpec] = spec.section("models")
    return models


def model_spec(spec: ProjectSpec, name: str) -> ModelSpec:
    """The named model's spec; NotFoundError listing the known ones."""
    models = models_of(spec)
    try:
        return models[name]
    except KeyError:
        known = ", ".join(sorted(models)) or "none"
        raise NotFoundError(
            f"no model {name!r} under models: in {spec.spec_file} (known: {known})", model=name
        ) from None
