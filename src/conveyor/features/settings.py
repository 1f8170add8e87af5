"""The ``features:`` section of ``conveyor.yaml``: entities, feature views, on-demand
features and feature services, the source of truth of the feature store.

::

    features:
      entities:
        customer: {join_keys: [customer_id], value_types: {customer_id: int64}}
      views:
        customer_spend:
          entities: [customer]
          source: {dataset: transactions}          # or {path: data/spend.parquet}
          event_time: timestamp
          created_time: ingested_at               # optional: "as known at" and ties
          ttl: 7d
          features:
            - {name: amount, type: double}
          aggregates:                             # point-in-time windows per entity
            - {column: amount, functions: [sum, count, mean], windows: [1h, 24h, 7d]}
      on_demand:
        amount_vs_usual:
          function: features:amount_vs_usual      # the same function online and offline
          inputs: [amount, customer_spend:amount_mean_7d]
          outputs: {amount_vs_usual: double}
      services:
        fraud: {features: ["customer_spend:*", amount_vs_usual]}
      materialize:                                # optional
        cron: "*/15 * * * *"                      # the pipeline features.materialize
        views: [customer_spend]                   # default: every view

An aggregate's features are named ``<column>_<function>_<window>`` (``amount_sum_24h``);
a service names features as ``view:feature``, ``view:*`` or an on-demand name. Every
reference is checked when the spec loads; the columns and types against the sources
when ``conveyor features apply`` runs.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.durations import spec_duration
from conveyor.features.offline import window_label

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = [
    "AGGREGATE_FUNCTIONS",
    "SECTIONS",
    "AggregateSpec",
    "EntitySpec",
    "FeatureSpec",
    "FeaturesSpec",
    "MaterializeSpec",
    "OnDemandSpec",
    "ServiceSpec",
    "SourceSpec",
    "ViewSpec",
    "features_of",
    "window_label",
]

AGGREGATE_FUNCTIONS = ("sum", "count", "mean", "min", "max")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_ENTRY = re.compile(r"^[\w.]+:[\w.]+$")
_STRICT = ConfigDict(extra="forbid", frozen=True)


def _name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{what} {value!r}: lower-case letters, digits and _, starting with a letter"
        )
    return value


class EntitySpec(BaseModel):
    """What features are about: a customer, a merchant; found by its join keys."""

    model_config = _STRICT

    join_keys: list[str] = Field(min_length=1, description="Columns that identify one entity.")
    value_types: dict[str, str] = Field(
        default_factory=dict, description="Type name of each join key (int64, string...)."
    )
    description: str = Field("", description="What the entity is, for people.")

    @model_validator(mode="after")
    def _types_name_keys(self) -> EntitySpec:
        unknown = set(self.value_types) - set(self.join_keys)
        if unknown:
            raise ValueError(f"value_types names {sorted(unknown)}, which are not join keys")
        return self


class SourceSpec(BaseModel):
    """Where a view's rows come from: a data set's latest version, a Parquet or CSV path
    (relative to the project), or a SQL query on the project's data sets (DuckDB)."""

    model_config = _STRICT

    dataset: str | None = Field(None, description="A data set: its latest version's rows.")
    path: str | None = Field(None, description="A Parquet or CSV file, project-relative.")
    sql: str | None = Field(None, description="DuckDB SQL over the project's data sets.")

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceSpec:
        given = [k for k in ("dataset", "path", "sql") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("a source is exactly one of dataset, path or sql")
        return self


class FeatureSpec(BaseModel):
    """One feature a view serves: a column of the source (after its transform)."""

    model_config = _STRICT

    name: str
    type: str = Field(description="Type name (double, int64, string, bool...).")
    description: str = ""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _name(value, "feature")


class AggregateSpec(BaseModel):
    """Windowed aggregates of one column per entity, point-in-time correct: for an entity
    row at time t, over the source rows of that entity with event time in (t - window, t]."""

    model_config = _STRICT

    column: str
    functions: list[Literal["sum", "count", "mean", "min", "max"]] = Field(min_length=1)
    windows: list[timedelta] = Field(min_length=1, description="Durations: 1h, 24h, 7d...")

    @field_validator("windows", mode="before")
    @classmethod
    def _windows(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [spec_duration(w, "window") for w in value]

    def feature_names(self) -> list[str]:
        return [
            f"{self.column}_{fn}_{window_label(w)}" for fn in self.functions for w in self.windows
        ]


class ViewSpec(BaseModel):
    """A feature view: features of some entities from one source, with times and a TTL."""

    model_config = _STRICT

    entities: list[str] = Field(min_length=1, description="Entities the rows are about.")
    source: SourceSpec
    event_time: str = Field(description="The column saying when a row became true.")
    created_time: str | None = Field(
        None, description="When the row was written: 'as known at' and ties on event time."
    )
    ttl: timedelta | None = Field(
        None, description="How long a value stays valid after its event time (none: forever)."
    )
    features: list[FeatureSpec] = Field(
        default_factory=list, description="Columns served as they are: {name, type}."
    )
    transform: str | None = Field(
        None,
        description="DuckDB SQL over the table `source`, or module:function taking and "
        "returning an Arrow table; applied before the features are read.",
    )
    aggregates: list[AggregateSpec] = Field(
        default_factory=list,
        description="Windowed aggregates: {column, functions: [sum, count, mean, min, max], "
        "windows: [1h, 24h, 7d]}, named <column>_<function>_<window>.",
    )
    description: str = Field("", description="What the view holds, for people.")

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl(cls, value: Any) -> Any:
        return None if value is None else spec_duration(value, "ttl")

    @model_validator(mode="after")
    def _has_features(self) -> ViewSpec:
        names = self.feature_names()
        if not names:
            raise ValueError("a view needs features or aggregates")
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"feature names repeat: {', '.join(duplicated)}")
        return self

    def feature_names(self) -> list[str]:
        return [f.name for f in self.features] + [
            n for a in self.aggregates for n in a.feature_names()
        ]

    @property
    def transform_is_python(self) -> bool:
        return self.transform is not None and bool(_ENTRY.match(self.transform.strip()))


class OnDemandSpec(BaseModel):
    """Features computed from the request (serving) or the entity frame (training) by the
    same function: ``function(table) -> table`` over Arrow, with ``inputs`` as columns."""

    model_config = _STRICT

    function: str = Field(pattern=_ENTRY.pattern, description="module:function")
    inputs: list[str] = Field(min_length=1, description="Request fields or view:feature.")
    outputs: dict[str, str] = Field(min_length=1, description="Output name -> type name.")


class ServiceSpec(BaseModel):
    """A named bundle of features a model uses (versioned when applied)."""

    model_config = _STRICT

    features: list[str] = Field(min_length=1, description="view:feature, view:* or on-demand.")
    description: str = Field("", description="What the bundle is for, for people.")


class MaterializeSpec(BaseModel):
    """How ``conveyor features materialize`` runs, and when the scheduler runs it: with a
    ``cron``, ``conveyor pipeline schedule`` runs the pipeline ``features.materialize``."""

    model_config = _STRICT

    cron: str | None = Field(
        None, description="Cron expression (UTC) of scheduled runs, e.g. '*/15 * * * *'."
    )
    views: list[str] = Field(
        default_factory=list, description="Views a scheduled run writes (none: every view)."
    )
    full: bool = Field(
        False, description="Scheduled runs rewrite everything instead of what is new."
    )
    chunk_rows: int = Field(
        100_000, gt=0, description="Rows written per chunk; a checkpoint is kept after each."
    )
    lateness: timedelta = Field(
        timedelta(0),
        description="How far before the watermark an incremental run reads again, for rows "
        "that arrive late with an old created (or event) time.",
    )

    @field_validator("lateness", mode="before")
    @classmethod
    def _lateness(cls, value: Any) -> Any:
        if value in (0, "0", "0s"):
            return timedelta(0)
        return spec_duration(value, "lateness")


class FeaturesSpec(BaseModel):
    """Entities, feature views, on-demand features and feature services."""

    model_config = _STRICT

    entities: dict[str, EntitySpec] = Field(default_factory=dict)
    views: dict[str, ViewSpec] = Field(default_factory=dict)
    on_demand: dict[str, OnDemandSpec] = Field(default_factory=dict)
    services: dict[str, ServiceSpec] = Field(default_factory=dict)
    materialize: MaterializeSpec = Field(
        default_factory=MaterializeSpec,
        description="Materialization: chunk size, lateness, and a cron to schedule it.",
    )

    @model_validator(mode="after")
    def _references(self) -> FeaturesSpec:
        for kind in ("entities", "views", "on_demand", "services"):
            for name in getattr(self, kind):
                _name(name, kind.rstrip("s").replace("_", "-"))
        for name, view in self.views.items():
            for entity in view.entities:
                if entity not in self.entities:
                    raise ValueError(
                        f"views.{name}.entities: no entity {entity!r}; declared: "
                        f"{', '.join(sorted(self.entities)) or 'none'}"
                    )
        for view_name in self.materialize.views:
            if view_name not in self.views:
                raise ValueError(
                    f"materialize.views: no view {view_name!r}; declared: "
                    f"{', '.join(sorted(self.views)) or 'none'}"
                )
        for name, service in self.services.items():
            for ref in service.features:
                self.resolve(ref, where=f"services.{name}.features")
        for name, demand in self.on_demand.items():
            for ref in demand.inputs:
                if ":" in ref:
                    self.resolve(ref, where=f"on_demand.{name}.inputs")
        return self

    def resolve(self, ref: str, *, where: str = "feature") -> list[tuple[str, str]]:
        """``(view or on-demand name, feature)`` pairs a reference stands for; a ValueError
        naming the missing view or feature otherwise."""
        if ":" not in ref:
            demand = self.on_demand.get(ref)
            if demand is None:
                raise ValueError(
                    f"{where}: {ref!r} is neither view:feature nor an on-demand feature "
                    f"({', '.join(sorted(self.on_demand)) or 'none declared'})"
                )
            return [(ref, out) for out in demand.outputs]
        view_name, _, feature = ref.partition(":")
        view = self.views.get(view_name)
        if view is None:
            raise ValueError(
                f"{where}: no view {view_name!r}; declared: "
                f"{', '.join(sorted(self.views)) or 'none'}"
            )
        names = view.feature_names()
        if feature == "*":
            return [(view_name, n) for n in names]
        if feature not in names:
            raise ValueError(
                f"{where}: view {view_name!r} has no feature {feature!r}; it has {', '.join(names)}"
            )
        return [(view_name, feature)]


SECTIONS: dict[str, Any] = {
    "features": (
        FeaturesSpec,
        Field(default_factory=FeaturesSpec, description="The feature store's definitions."),
    ),
}


def features_of(spec: ProjectSpec) -> FeaturesSpec:
    """The project's ``features:`` section (empty when the spec has none)."""
    found = getattr(spec, "features", None)
    return found if isinstance(found, FeaturesSpec) else FeaturesSpec()
