"""Monitoring: what watches models in production, computed from the one event log.

So far, the analytics path every monitor reads: the event log compacted into
hour-partitioned Parquet under the artifact store (:func:`compact`, ``conveyor events
compact``) and queried with DuckDB together with the newest events not yet compacted
(:class:`MonitorQuery`, ``project.monitoring``, ``conveyor monitor latency``). See
``docs/monitoring.md``.

Importing this package imports neither DuckDB nor Arrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.monitoring.cbpe import CBPE
    from conveyor.monitoring.compaction import Compaction, Progress, compact
    from conveyor.monitoring.data_quality import DataQualityReport
    from conveyor.monitoring.drift_live import LiveDrift, live_drift
    from conveyor.monitoring.feedback import load_feedback, record_feedback
    from conveyor.monitoring.quality import (
        ConceptDrift,
        QualityReport,
        concept_drift,
        quality_report,
    )
    from conveyor.monitoring.query import LatencyReport, MonitorQuery
    from conveyor.monitoring.system_query import SystemReport

__all__ = [
    "CBPE",
    "Compaction",
    "ConceptDrift",
    "DataQualityReport",
    "LatencyReport",
    "LiveDrift",
    "MonitorQuery",
    "Progress",
    "QualityReport",
    "SystemReport",
    "compact",
    "concept_drift",
    "live_drift",
    "load_feedback",
    "quality_report",
    "record_feedback",
]

_LAZY = {
    "Compaction": "conveyor.monitoring.compaction",
    "Progress": "conveyor.monitoring.compaction",
    "compact": "conveyor.monitoring.compaction",
    "LatencyReport": "conveyor.monitoring.query",
    "SystemReport": "conveyor.monitoring.system_query",
    "DataQualityReport": "conveyor.monitoring.data_quality",
    "MonitorQuery": "conveyor.monitoring.query",
    "load_feedback": "conveyor.monitoring.feedback",
    "record_feedback": "conveyor.monitoring.feedback",
    "ConceptDrift": "conveyor.monitoring.quality",
    "QualityReport": "conveyor.monitoring.quality",
    "concept_drift": "conveyor.monitoring.quality",
    "quality_report": "conveyor.monitoring.quality",
    "CBPE": "conveyor.monitoring.cbpe",
    "LiveDrift": "conveyor.monitoring.drift_live",
    "live_drift": "conveyor.monitoring.drift_live",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor.monitoring' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
