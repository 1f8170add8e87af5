"""The monitoring section of ``conveyor.yaml``: ``monitoring:``.

::

    monitoring:
      compaction:
        cron: "*/10 * * * *"      # UTC: conveyor pipeline schedule runs monitoring.compact
        batch_events: 200000      # events per Parquet batch (one checkpoint each)
        settle_timeout_s: 10      # PostgreSQL: longest wait for writes in flight

Every field can be set from the environment (``CONVEYOR_MONITORING__COMPACTION__CRON``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.monitoring.alerts.settings import AlertsSpec
from conveyor.monitoring.drift_jobs import DriftJobSpec
from conveyor.monitoring.interop.settings import InteropSpec
from conveyor.monitoring.quality_settings import QualitySpec
from conveyor.monitoring.sink_settings import SinkSpec
from conveyor.monitoring.system import SystemSpec

if TYPE_CHECKING:
    from conveyor.config import ProjectSpec

__all__ = ["SECTIONS", "CompactionSpec", "MonitoringSpec", "monitoring_of"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class CompactionSpec(BaseModel):
    """How the event log is copied into Parquet (``conveyor events compact``), and when
    the scheduler does it: with a ``cron``, ``conveyor pipeline schedule`` runs the
    pipeline ``monitoring.compact``."""

    model_config = _STRICT

    cron: str | None = Field(
        None, description="Cron expression (UTC) of scheduled compactions, e.g. '*/10 * * * *'."
    )
    batch_events: int = Field(
        200_000,
        ge=1,
        le=5_000_000,
        description="Events read and written per batch; the checkpoint moves after each.",
    )
    settle_timeout_s: float = Field(
        10.0,
        ge=0,
        le=600,
        description="PostgreSQL: longest wait for write transactions in flight before a "
        "compaction stops at the first seq not yet committed.",
    )


class MonitoringSpec(BaseModel):
    """Monitoring: the columnar copy of the event log that monitors query."""

    model_config = _STRICT

    compaction: CompactionSpec = Field(default_factory=CompactionSpec)
    system: SystemSpec = Field(
        default_factory=SystemSpec,
        description="How each server worker samples itself (CPU, memory, queues, shed load).",
    )
    drift: DriftJobSpec = Field(
        default_factory=DriftJobSpec,
        description="Live drift checks of sampled traffic (conveyor monitor drift) and their "
        "schedule.",
    )
    quality: QualitySpec = Field(
        default_factory=QualitySpec,
        description="Ground truth (feedback) joined to predictions, model quality per window "
        "and concept drift (conveyor monitor quality).",
    )
    interop: InteropSpec = Field(
        default_factory=InteropSpec,
        description="The Prometheus rules and Grafana dashboard generated from the spec "
        "(conveyor monitor prometheus-rules, conveyor monitor grafana).",
    )
    alerts: AlertsSpec = Field(
        default_factory=AlertsSpec,
        description="Alert rules (derived from slos: and your own), their evaluation, "
        "silences, inhibition and notification sinks (conveyor alerts).",
    )
    sink: SinkSpec = Field(
        default_factory=SinkSpec,
        description="The event log moved from a broker (nats://) into the SQL log and its "
        "Parquet copy (conveyor events sink).",
    )


SECTIONS: dict[str, Any] = {
    "monitoring": (
        MonitoringSpec,
        Field(
            default_factory=MonitoringSpec,
            description="Monitoring: the event log's columnar copy and its compaction.",
        ),
    ),
}


def monitoring_of(spec: ProjectSpec) -> MonitoringSpec:
    """The ``monitoring:`` section (defaults when the spec has none)."""
    found = getattr(spec, "monitoring", None)
    return found if isinstance(found, MonitoringSpec) else MonitoringSpec()
