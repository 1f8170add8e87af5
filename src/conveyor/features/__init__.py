"""The feature store: definitions once (``features:`` in the spec), point-in-time correct
training frames (:mod:`conveyor.features.offline`), an online store with the same TTLs
(:mod:`conveyor.features.online`), and versioned definitions (``conveyor features apply``).

Importing this package imports neither DuckDB nor Arrow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.project import Project

__all__ = ["get_online_features", "get_training_frame"]


def get_training_frame(
    project: Project,
    entity_frame: Any,
    service_or_features: str | Sequence[str],
    *,
    entity_time: str = "event_timestamp",
    as_known_at: bool = True,
) -> pa.Table:
    """``entity_frame`` (join keys and ``entity_time``; Arrow or pandas) with the features
    of a service (or ``view:feature`` references) as known at each row's time: see
    :mod:`conveyor.features.retrieval`. The same as ``project.features.training_frame``."""
    from conveyor.features.retrieval import training_frame

    return training_frame(
        project,
        entity_frame,
        service_or_features,
        entity_time=entity_time,
        as_known_at=as_known_at,
    )


def get_online_features(
    project: Project,
    entities: Sequence[Mapping[str, Any]],
    service_or_features: str | Sequence[str],
) -> list[dict[str, Any]]:
    """For each entity row (join keys, plus the request fields on-demand features read):
    ``{"features": {...}, "status": {...}, "event_time": {...}}``, read from the online
    store in one round trip (see :func:`conveyor.features.materialize.online_features`)."""
    from conveyor.features.materialize import online_features

    return online_features(project, entities, service_or_features)
