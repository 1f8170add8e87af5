"""The ``readiness:`` section of ``conveyor.yaml``: what the readiness report holds the
project to besides ``slos:`` (the quality floor, p95 latency, throughput and availability
it reuses), and how it measures.

::

    slos:
      quality: {metric: roc_auc, floor: 0.8}
      latency_p95_ms: 50
      throughput_rps: 200
      availability: 0.999
    readiness:
      models: [fraud]              # default: every model with a route
      window: 1d                   # live monitors, feedback and availability over this
      business: {baseline: 1.20, target: 1.30}   # mean feedback value per prediction
      load_test: {duration_s: 5, records: [{amount: 12.5, country: FR}]}
      tls_required: true
      retention_days: 90
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = ["SECTIONS", "BusinessTarget", "LoadTestSpec", "ReadinessSpec", "readiness_of"]


class BusinessTarget(BaseModel):
    """The business metric: the mean ``value`` of the feedback on the model's predictions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        "value", min_length=1, description="What the feedback value measures (shown in reports)."
    )
    baseline: float = Field(description="The value before the model (or of the incumbent).")
    target: float = Field(description="The value the project promised.")
    direction: Literal["maximize", "minimize"] = Field(
        "maximize", description="maximize: higher is better (revenue); minimize: lower (loss)."
    )

    def met_by(self, value: float) -> bool:
        return value >= self.target if self.direction == "maximize" else value <= self.target


class LoadTestSpec(BaseModel):
    """The built-in load test (``conveyor readiness --load-test``): requests at the
    target rate (``slos.throughput_rps``) against the running server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(
        None,
        description="The server's base URL (default: http(s)://serving.host:serving.port).",
    )
    model: str | None = Field(None, description="The model to call (default: the first one).")
    duration_s: float = Field(5, gt=0, le=120, description="How long to send, seconds.")
    rate_rps: float | None = Field(
        None, gt=0, description="Requests per second to send (default: slos.throughput_rps)."
    )
    concurrency: int = Field(64, ge=1, le=1000, description="Requests in flight at most.")
    timeout_s: float = Field(10, gt=0, le=120, description="One request's timeout.")
    records: list[dict[str, Any]] | None = Field(
        None,
        description="The rows each request sends (default: the input of the latest sampled "
        "prediction of the model, serving.payload_sample_rate).",
    )


class ReadinessSpec(BaseModel):
    """``conveyor readiness``: the success criteria beyond ``slos:`` and how to measure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] = Field(
        default_factory=list, description="Models judged (default: every model with a route)."
    )
    window: str = Field("1d", description="Live monitors, feedback and availability window.")
    min_requests: int = Field(
        100, ge=1, description="Live requests below which latency and availability are unmeasured."
    )
    min_labelled: int = Field(
        30, ge=1, description="Labelled predictions below which quality is unmeasured."
    )
    business: BusinessTarget | None = Field(
        None, description="The business metric's baseline and target (feedback values)."
    )
    load_test: LoadTestSpec = Field(default_factory=LoadTestSpec)
    tls_required: bool = Field(
        False, description="The server must serve HTTPS (serving.ssl_certfile and ssl_keyfile)."
    )
    retention_days: int | None = Field(
        None,
        ge=1,
        description="Telemetry (predictions with inputs, feedback) older than this must be gone.",
    )
    deletion_required: bool = Field(
        True, description="A deletion request (conveyor data forget) must have run end to end."
    )

    @field_validator("window")
    @classmethod
    def _duration(cls, value: str) -> str:
        from conveyor.durations import parse_duration
        from conveyor.errors import InvalidInputError

        try:
            parse_duration(value, "readiness.window")
        except InvalidInputError as exc:
            raise ValueError(str(exc)) from None
        return value


SECTIONS: dict[str, Any] = {
    "readiness": (
        ReadinessSpec,
        Field(
            default_factory=ReadinessSpec,
            description="conveyor readiness: success criteria besides slos, and how to measure.",
        ),
    ),
}


def readiness_of(spec: ProjectSpec) -> ReadinessSpec:
    """The ``readiness:`` section."""
    readiness: ReadinessSpec = spec.section("readiness")
    return readiness
