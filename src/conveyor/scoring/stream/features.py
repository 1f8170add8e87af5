"""Scores written as fresh online features: the feature store's push, one row per record.

A record's entity key (``key_field``) is the view's join key, its event time (or, without
a ``time_field``, the moment it was scored) the view's event time, and each feature the
record field it is mapped to. :func:`conveyor.features.push.push` checks the rows against
the view, logs them offline and writes them online, where the newest row per entity
wins: a record written again (a redelivery) sets the same value at the same time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.project import Project

__all__ = ["write_online"]


def write_online(
    project: Project,
    view: str,
    fields: Mapping[str, str],
    records: Sequence[Mapping[str, Any]],
) -> None:
    from conveyor.features.materialize import join_keys
    from conveyor.features.push import push
    from conveyor.features.settings import features_of

    if not records:
        return
    spec = features_of(project.spec)
    definition = spec.views.get(view)
    if definition is None:
        raise InvalidInputError(
            f"there is no feature view {view!r} (features.views in conveyor.yaml)", field="view"
        )
    keys = join_keys(spec, definition)
    if len(keys) != 1:
        raise InvalidInputError(
            f"feature view {view!r} has join keys {list(keys)}; a stream's scores fill a view "
            "keyed by one entity key (key_field)",
            field="view",
        )
    now = datetime.now(UTC)
    rows = []
    for r in records:
        if r.get("key") is None:
            raise InvalidInputError(
                f"record {r['id']} has no entity key: set key_field to write features",
                field="key_field",
            )
        when = r.get("time")
        row: dict[str, Any] = {
            keys[0]: r["key"],
            definition.event_time: now if when is None else datetime.fromtimestamp(when, UTC),
        }
        for feature, source in fields.items():
            row[feature] = r.get(source)
        rows.append(row)
    push(project, view, rows, actor="scoring.stream")
