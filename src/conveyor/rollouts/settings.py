"""The ``rollouts:`` section of ``conveyor.yaml``: per-model defaults of a rollout.

::

    rollouts:
      defaults:
        steps: [1, 5, 25, 50, 100]      # or "shadow", "flag:internal:group=internal", ...
        interval: 10m                    # per step
        max_extensions: 6                # too little traffic extends a step this often
        analysis: {min_requests: 300, max_psi: 0.25, checks: ["mypkg.checks:fn"]}
      models:
        fraud: {interval: 5m, steps: [shadow, 5, 50, 100]}

A step is a percentage of traffic to the candidate (``5``), ``shadow`` (the candidate
mirrors every request, unanswered, judged on its errors, latency and agreement) or a
flag rule ``flag:NAME:key=value[,key=value][:percent]`` (requests whose attributes
match go to the candidate: internal users, then beta users...). Flags accumulate: a
later step keeps the earlier flags on.

Every field can be set from the environment (``CONVEYOR_ROLLOUTS__DEFAULTS__INTERVAL``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = [
    "SECTIONS",
    "AnalysisSpec",
    "RolloutDefaults",
    "RolloutsSpec",
    "Step",
    "parse_steps",
    "plan_for",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class AnalysisSpec(BaseModel):
    """How each step is judged (see :mod:`conveyor.rollouts.analysis`)."""

    model_config = _STRICT

    min_requests: int = Field(
        300, ge=1, description="Canary requests a step needs before it can pass."
    )
    alpha: float = Field(
        0.001, gt=0, lt=0.5, description="Significance of the one-sided tests that fail a step."
    )
    max_error_rate: float | None = Field(
        None, ge=0, le=1, description="Absolute error-rate limit (default: 1 - slos.availability)."
    )
    max_error_increase: float = Field(
        1.0, ge=0, description="Relative limit: canary <= stable * (1 + this) + error_slack."
    )
    error_slack: float = Field(
        0.002, ge=0, le=1, description="Absolute error-rate slack over the stable's rate."
    )
    max_p95_ms: float | None = Field(
        None, gt=0, description="Absolute p95 latency limit, ms (default: slos.latency_p95_ms)."
    )
    max_latency_increase: float = Field(
        0.1, ge=0, description="Relative limit: canary p95 <= stable p95 * (1 + this)."
    )
    max_psi: float | None = Field(
        0.25, gt=0, description="Prediction drift: PSI of outputs against stable's; null: off."
    )
    quality_metric: str | None = Field(
        None,
        description="Quality from feedback: this metric of conveyor.checks.metrics (default: "
        "monitoring.quality's for the model).",
    )
    max_quality_drop: float = Field(
        0.02, ge=0, description="Quality and business metric: at most this below stable's."
    )
    min_agreement: float = Field(
        0.95, ge=0, le=1, description="Shadow phase: share of answers agreeing with primary."
    )
    checks: list[str] = Field(
        default_factory=list,
        description="User checks: 'module:function(canary, stable, spec)' -> CheckResults.",
    )


class RolloutDefaults(BaseModel):
    """A rollout's plan: steps, interval, traffic needed, analysis."""

    model_config = _STRICT

    steps: list[Any] = Field(
        default_factory=lambda: [1, 5, 25, 50, 100],
        description="Percentages, 'shadow', or 'flag:NAME:key=value[:percent]'.",
    )
    interval: str = Field("10m", description="How long each step lasts before it is judged.")
    max_extensions: int = Field(
        6, ge=0, le=1000, description="Times a step is extended for too little traffic."
    )
    alias: str = Field("champion", description="The alias promoted when the last step passes.")
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        from conveyor.durations import parse_duration

        parse_duration(value, "interval")
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[Any]) -> list[Any]:
        parse_steps(value)
        return value


class ControllerSpec(BaseModel):
    """Where the controller runs besides ``conveyor rollout run``."""

    model_config = _STRICT

    in_server: bool = Field(
        False,
        description="Run the controller in the model server's background tasks (every worker "
        "ticks; the lease lets one drive each rollout).",
    )
    poll_s: float = Field(5.0, gt=0, le=600, description="Seconds between the server's ticks.")
    lease_s: float = Field(
        30.0, gt=0, le=3600, description="Lease length, seconds (renewed each tick)."
    )


class RolloutsSpec(BaseModel):
    model_config = _STRICT

    controller: ControllerSpec = Field(default_factory=ControllerSpec)
    defaults: RolloutDefaults = Field(default_factory=RolloutDefaults)
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per model: any field of defaults (steps, interval, analysis...).",
    )


SECTIONS: dict[str, Any] = {
    "rollouts": (
        RolloutsSpec,
        Field(
            default_factory=RolloutsSpec,
            description="Progressive delivery: rollout steps, intervals and step analysis.",
        ),
    ),
}


class Step(BaseModel):
    """One step: ``percent`` of traffic, a ``shadow`` window, or a ``flag`` rule."""

    model_config = _STRICT

    kind: str  # "percent", "shadow" or "flag"
    percent: float = 100.0
    flag: str | None = None
    match: dict[str, str] = Field(default_factory=dict)

    def label(self) -> str:
        if self.kind == "shadow":
            return "shadow"
        if self.kind == "flag":
            where = ",".join(f"{k}={v}" for k, v in self.match.items())
            return f"flag:{self.flag}:{where}:{self.percent:g}"
        return f"{self.percent:g}%"


def parse_steps(steps: Any) -> list[Step]:
    """``"shadow,1,5,100"`` or a list of percentages, ``shadow`` and flag rules."""
    items = steps.split(",") if isinstance(steps, str) else list(steps)
    # flag steps use commas inside their match: rejoin "flag:a:x=1", "y=2" pieces
    if isinstance(steps, str):
        joined: list[str] = []
        for item in items:
            if joined and "=" in item and ":" not in item and joined[-1].startswith("flag:"):
                joined[-1] += "," + item
            else:
                joined.append(item)
        items = list(joined)
    out: list[Step] = []
    for i, item in enumerate(items):
        out.append(_step(item, i))
    if not out:
        raise InvalidInputError("a rollout needs at least one step", field="steps")
    percents = [s.percent for s in out if s.kind == "percent"]
    if percents != sorted(percents):
        raise InvalidInputError(
            f"steps: percentages must not decrease, got {percents}", field="steps"
        )
    if out[-1].kind != "percent" or out[-1].percent != 100:
        raise InvalidInputError(
            "steps: the last step must be 100 (the candidate takes all the traffic, then its "
            "alias is promoted)",
            field="steps",
        )
    return out


def _step(item: Any, i: int) -> Step:
    where = f"steps[{i}]"
    if isinstance(item, int | float) and not isinstance(item, bool):
        return _percent(float(item), where)
    text = str(item).strip()
    if text == "shadow":
        return Step(kind="shadow", percent=0)
    if text.startswith("flag:"):
        parts = text.split(":")
        if len(parts) not in (3, 4) or not parts[1]:
            raise InvalidInputError(
                f"{where} {text!r}: expected flag:NAME:key=value[,key=value][:percent]",
                field="steps",
            )
        match: dict[str, str] = {}
        for pair in filter(None, parts[2].split(",")):
            key, eq, value = pair.partition("=")
            if not eq or not key:
                raise InvalidInputError(
                    f"{where} {text!r}: {pair!r} is not key=value", field="steps"
                )
            match[key] = value
        percent = _percent(float(parts[3]), where).percent if len(parts) == 4 else 100.0
        return Step(kind="flag", flag=parts[1], match=match, percent=percent)
    try:
        return _percent(float(text.rstrip("%")), where)
    except ValueError:
        raise InvalidInputError(
            f"{where} {text!r}: expected a percentage, 'shadow' or 'flag:NAME:key=value'",
            field="steps",
        ) from None


def _percent(value: float, where: str) -> Step:
    if not 0 < value <= 100:
        raise InvalidInputError(f"{where}: a percentage in (0, 100], got {value:g}", field="steps")
    return Step(kind="percent", percent=value)


def plan_for(spec: ProjectSpec | None, model: str, **overrides: Any) -> RolloutDefaults:
    """The spec's defaults, then the model's own section, then ``overrides`` (the CLI's)."""
    from pydantic import ValidationError

    section = getattr(spec, "rollouts", None) if spec is not None else None
    section = section if isinstance(section, RolloutsSpec) else RolloutsSpec()
    data = section.defaults.model_dump()
    for source in (section.models.get(model, {}), overrides):
        for key, value in source.items():
            if value is None:
                continue
            if key == "analysis":
                data["analysis"] = {**data["analysis"], **dict(value)}
            else:
                data[key] = value
    try:
        return RolloutDefaults(**data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, InvalidInputError):
            raise cause from None
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInputError(f"rollout {where}: {first['msg']}", field=where) from None


def interval_of(plan: RolloutDefaults) -> timedelta:
    from conveyor.durations import parse_duration

    return parse_duration(plan.interval, "interval")


def rollouts_of(spec: ProjectSpec) -> RolloutsSpec:
    found = getattr(spec, "rollouts", None)
    return found if isinstance(found, RolloutsSpec) else RolloutsSpec()
