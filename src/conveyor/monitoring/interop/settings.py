"""``monitoring.interop``: how the Prometheus rules and the Grafana dashboard are generated.

::

    monitoring:
      interop:
        matchers: 'job="conveyor"'      # added to every series selector
        windows: [5m, 1h]               # recording rules per monitor (alert windows are added)
        rule_interval: 30s              # evaluation interval of the rule groups (default: global)
        datasource: Prometheus          # the dashboard's default data source
        export_interval_s: 60           # GET /v1/monitor/metrics recomputes at most this often
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = ["InteropSpec", "interop_of"]

_PROM_DURATION = re.compile(r"^(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?$")
# One or more label matchers: name, operator, double-quoted value; comma separated.
_MATCHER = r'[A-Za-z_][A-Za-z0-9_]*\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"'
_MATCHERS = re.compile(rf"^\s*{_MATCHER}(\s*,\s*{_MATCHER})*\s*$")


def _duration(value: str, what: str) -> str:
    if not value or not _PROM_DURATION.fullmatch(value):
        raise ValueError(f"{what} {value!r}: expected a Prometheus duration such as 30s, 5m, 1h")
    return value


class InteropSpec(BaseModel):
    """What ``conveyor monitor prometheus-rules`` and ``conveyor monitor grafana`` generate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    matchers: str = Field(
        "",
        description='Label matchers added to every series selector, e.g. job="conveyor" '
        "(empty: every series of that name Prometheus holds).",
    )
    windows: list[str] = Field(
        default_factory=lambda: ["5m", "1h"],
        description="Windows of the recording rules per monitor (conveyor:latency_p95_ms:5m); "
        "the windows the alert rules use are added.",
    )
    rule_interval: str | None = Field(
        None, description="Evaluation interval of the generated rule groups (default: global)."
    )
    export_interval_s: float = Field(
        60.0,
        ge=1,
        le=86400,
        description="GET /v1/monitor/metrics computes the event-log monitors (quality, drift, "
        "data) at most this often, whatever the scrape interval.",
    )
    datasource: str = Field(
        "Prometheus",
        min_length=1,
        description="The Grafana data source the dashboard's datasource variable selects first.",
    )

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, value: str) -> str:
        if value and not _MATCHERS.fullmatch(value):
            raise ValueError(
                f'{value!r}: expected label matchers such as job="conveyor", '
                'env=~"prod|staging" (comma separated)'
            )
        return value.strip()

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        return [_duration(w, "window") for w in value]

    @field_validator("rule_interval")
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        return None if value is None else _duration(value, "rule_interval")


def interop_of(spec: ProjectSpec) -> InteropSpec:
    """``monitoring.interop`` (defaults when the spec has none)."""
    from conveyor.monitoring.settings import monitoring_of

    found = getattr(monitoring_of(spec), "interop", None)
    return found if isinstance(found, InteropSpec) else InteropSpec()
