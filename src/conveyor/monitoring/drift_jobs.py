"""Live drift checks on a schedule: ``monitoring.drift`` in the spec, the pipeline
``monitoring.drift``.

::

    monitoring:
      drift:
        cron: "0 * * * *"          # UTC: conveyor pipeline schedule runs monitoring.drift
        window: 1d                 # each run compares the last day of sampled traffic
        reference: training        # or {since: 2026-11-01T00:00, until: 2026-11-08T00:00}
        models: [fraud]            # default: every model with sampled inputs in the window
        max_rows: 1000000          # live rows compared at most (a seeded sample beyond)
        drift_share: 0.5           # dataset drift at this share of drifted input columns
        cbpe: true                 # estimate a classifier's accuracy from its confidence

Each run calls :func:`~conveyor.monitoring.drift_live.live_drift` for every model, which
saves the drift report and records ``monitoring.drift_checked`` and, when the report
failed, ``drift.detected``: a model whose ``retrain.on_events`` lists ``drift.detected``
is then retrained by the same scheduler. A model that cannot be checked (no reference,
no sampled inputs) is reported in the run's output with its error; the others are still
checked, and the run fails only when none could be.

:func:`run_drift_checks` is the same thing called directly (``conveyor monitor drift``
checks one model).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.errors import ConveyorError, InvalidInputError

if TYPE_CHECKING:
    from conveyor.pipelines.context import StepContext
    from conveyor.pipelines.definition import Pipeline
    from conveyor.project import Project

__all__ = [
    "PIPELINE",
    "DriftJobSpec",
    "ReferenceWindowSpec",
    "drift_pipeline",
    "drift_schedules",
    "run_drift_checks",
]

#: The name of the scheduled live drift checks' pipeline.
PIPELINE = "monitoring.drift"

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ReferenceWindowSpec(BaseModel):
    """A pinned window of live traffic to compare with (ISO 8601 times; naive: UTC)."""

    model_config = _STRICT

    since: datetime = Field(description="Start of the reference window.")
    until: datetime = Field(description="End (exclusive) of the reference window.")

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @model_validator(mode="after")
    def _ordered(self) -> ReferenceWindowSpec:
        if self.until <= self.since:
            raise ValueError("until must come after since")
        return self


class DriftJobSpec(BaseModel):
    """Live drift checks of models' sampled traffic, and when the scheduler runs them:
    with a ``cron``, ``conveyor pipeline schedule`` runs the pipeline ``monitoring.drift``."""

    model_config = _STRICT

    cron: str | None = Field(
        None, description="Cron expression (UTC) of scheduled drift checks, e.g. '0 * * * *'."
    )
    window: str = Field(
        "1d", description="How much recent traffic each check compares: 1h, 1d, 7d..."
    )
    reference: Literal["training"] | ReferenceWindowSpec = Field(
        "training",
        description="'training' (the version's training data, from its lineage) or a pinned "
        "window {since, until} of live traffic.",
    )
    models: list[str] | None = Field(
        None, description="Models to check; default every model with sampled inputs in the window."
    )
    max_rows: int = Field(
        1_000_000, ge=10, le=100_000_000, description="Live rows compared at most per model."
    )
    drift_share: float = Field(
        0.5, gt=0, le=1, description="Dataset drift at this share of drifted input columns."
    )
    cbpe: bool = Field(
        True, description="Estimate a classifier's accuracy from its calibrated confidence."
    )

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        from conveyor.durations import spec_duration

        spec_duration(value, "monitoring.drift.window")
        return value

    @property
    def window_delta(self) -> timedelta:
        from conveyor.durations import spec_duration

        return spec_duration(self.window, "monitoring.drift.window")


def run_drift_checks(
    project: Project,
    settings: DriftJobSpec | None = None,
    *,
    now: datetime | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """One scheduled run: every model of ``settings`` (default the spec's
    ``monitoring.drift``) checked over the last ``window``; per model its result or error."""
    from conveyor.monitoring.drift_live import live_drift

    if settings is None:
        from conveyor.monitoring.settings import monitoring_of

        settings = monitoring_of(project.spec).drift
    until = now or datetime.now(UTC)
    since = until - settings.window_delta
    models = (
        settings.models if settings.models is not None else _sampled_models(project, since, until)
    )
    window = None
    if isinstance(settings.reference, ReferenceWindowSpec):
        window = (settings.reference.since, settings.reference.until)
    results: dict[str, Any] = {}
    for model in models:
        try:
            found = live_drift(
                project,
                model,
                since=since,
                until=until,
                reference_window=window,
                max_rows=settings.max_rows,
                drift_share=settings.drift_share,
                cbpe=settings.cbpe,
                actor=actor,
            )
        except ConveyorError as exc:
            results[model] = {"error": exc.to_dict()}
            continue
        results[model] = {
            "version": found.version,
            "detected": found.detected,
            "alerted": found.alerted,
            "verdict": found.report.verdict,
            "report_id": found.report.id,
            "share": round(found.share, 6),
            "drifted": found.drifted,
            "metrics": {k: v for k, v in found.to_dict()["metrics"].items()},
            "rows": found.current["rows"],
            "seconds": round(found.seconds, 3),
        }
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "models": results,
        "checked": sum("error" not in r for r in results.values()),
        "detected": sorted(m for m, r in results.items() if r.get("detected")),
    }


def drift_pipeline(settings: DriftJobSpec) -> Pipeline:
    """The pipeline ``monitoring.drift`` on ``settings.cron``: one step, ``check``."""
    from conveyor.pipelines.definition import Pipeline

    pipeline = Pipeline(
        PIPELINE,
        schedule=settings.cron,
        catch_up="latest",
        description="Compare the models' sampled live traffic with their reference for drift",
    )

    @pipeline.step(outputs="drift")
    def check(ctx: StepContext) -> dict[str, Any]:
        out = run_drift_checks(ctx.project, settings, actor=f"pipeline:{ctx.pipeline}")
        for model, result in out["models"].items():
            if "error" in result:
                ctx.log.warning("%s: %s", model, result["error"]["message"])
            else:
                ctx.log.info(
                    "%s@%s: %s, %.0f%% of inputs drifted",
                    model,
                    result["version"],
                    result["verdict"],
                    100 * result["share"],
                )
        if out["models"] and not out["checked"]:
            first = next(iter(out["models"].values()))["error"]
            raise InvalidInputError(
                f"no model could be checked for drift; first error: {first['message']}",
                field="monitoring.drift",
            )
        return out

    return pipeline


def drift_schedules(project: Project) -> list[Pipeline]:
    """``[monitoring.drift]`` when the spec gives ``monitoring.drift.cron``."""
    from conveyor.monitoring.settings import monitoring_of

    settings = monitoring_of(project.spec).drift
    if settings.cron is None:
        return []
    return [drift_pipeline(settings)]


def _sampled_models(project: Project, since: datetime, until: datetime) -> list[str]:
    from conveyor.monitoring.query import MonitorQuery

    rows = (
        MonitorQuery(project)
        .sql(
            "SELECT DISTINCT subject FROM events WHERE kind = 'prediction' "
            "AND json_exists(payload, '$.input') ORDER BY subject",
            kinds=["prediction"],
            since=since,
            until=until,
        )
        .to_pylist()
    )
    return [str(r["subject"]) for r in rows if r["subject"]]
