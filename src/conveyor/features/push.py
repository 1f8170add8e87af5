"""Pushing fresh rows to a view: online at once, and into the offline log the training
frame reads, so a streaming source and the batch path agree.

::

    project.features.push("spend", [
        {"customer_id": 1, "ts": "2027-02-01T12:00:00Z", "amount": 12.5},
    ])

**What a pushed row holds**: the view's *output* columns, as its transform produces
them: the join keys, the event time, the created time (filled with the moment of the
push when absent or null; a view without a created time has none), every feature
(null allowed) and every column an aggregate reads. The transform is not applied to
pushed rows: they are unioned with the source's rows *after* it.

**Checked first, all of it**: every row against the view's declared keys (and the
entity's ``value_types``), times (a datetime or an ISO 8601 string; naive is UTC) and
feature types; an unknown column is refused too. One bad value refuses the whole push
with :class:`InvalidInputError` naming the field and the row, and nothing is written,
online or offline.

**Then, in this order**:

1. the offline log: the rows as one Parquet artifact (content-addressed, in the
   project's artifact store) and a row of ``feature_pushes`` naming it. The log is
   keyed by the digest of the rows as given, so pushing the same rows again (a retry
   after an error) is the same push, logged once, with the created times of the first;
2. the online store, where the newest row per entity wins (a compare-and-set);
3. one ``features.pushed`` audit event per call.

If the online store fails after step 1 (503), the rows are already in the offline
log, and the view's next materialization writes them online (their created time is
after its watermark); pushing them again does the same at once.

**Read back**: :func:`with_pushed` adds the logged rows of a view to its source's rows
(:func:`conveyor.features.sources.view_table`), so the training frame, materialization
and parity see them. Aggregates online move at the next materialization.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.features.settings import FeaturesSpec, ViewSpec
    from conveyor.project import Project

__all__ = ["Pushed", "push", "pushed_table", "with_pushed"]


@dataclass(frozen=True, slots=True)
class Pushed:
    """What one push did."""

    view: str
    rows: int
    written: int  #: entities whose online record was replaced or created
    kept: int  #: entities whose online record was newer, so kept
    expired: int  #: entities whose row was already past the view's TTL: not written online
    logged: bool  #: False when the same rows were pushed before (logged once)
    artifact: str  #: the Parquet file of the rows in the artifact store

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "rows": self.rows,
            "written": self.written,
            "kept": self.kept,
            "expired": self.expired,
            "logged": self.logged,
            "artifact": self.artifact,
        }


# -- the columns of a pushed row ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    role: str  # "join key", "event_time", "created_time", "feature", "aggregated column"
    declared: str | None  # the type name as declared, None: int or str (keys), a number
    arrow: pa.DataType | None


_TIMESTAMP = re.compile(r"^timestamp\[(s|ms|us|ns)(?:,\s*tz=(.+))?\]$")


def _arrow_type(name: str) -> pa.DataType | None:
    """The Arrow type of a declared type name, or None when it has no simple spelling."""
    import pyarrow as pa

    from conveyor.data.validation.outcomes import arrow_type_name

    text = arrow_type_name(name)
    try:
        return pa.type_for_alias(text)
    except (ValueError, KeyError):
        pass
    found = _TIMESTAMP.match(text)
    if found:
        return pa.timestamp(found.group(1), found.group(2))
    if text.startswith("timestamp"):
        return pa.timestamp("us", "UTC")
    return None


def _columns(spec: FeaturesSpec, view: ViewSpec) -> dict[str, _Column]:
    import pyarrow as pa

    found: dict[str, _Column] = {}
    for entity in view.entities:
        declared = spec.entities[entity]
        for key in declared.join_keys:
            wanted = declared.value_types.get(key)
            found.setdefault(
                key, _Column(key, "join key", wanted, _arrow_type(wanted) if wanted else None)
            )
    stamp = pa.timestamp("us", "UTC")
    found[view.event_time] = _Column(view.event_time, "event_time", "timestamp", stamp)
    if view.created_time is not None:
        found[view.created_time] = _Column(view.created_time, "created_time", "timestamp", stamp)
    for feature in view.features:
        found[feature.name] = _Column(
            feature.name, "feature", feature.type, _arrow_type(feature.type)
        )
    for aggregate in view.aggregates:
        found.setdefault(
            aggregate.column, _Column(aggregate.column, "aggregated column", None, None)
        )
    return found


def _moment(value: Any) -> datetime | None:
    """An aware UTC datetime from a datetime (naive: UTC) or an ISO 8601 string."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if isinstance(value, datetime):
        moment = datetime.fromisoformat(datetime.isoformat(value))  # a pandas.Timestamp too
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return None


def _date(value: Any) -> date | None:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    return None


_BAD = object()


def _value(column: _Column, value: Any) -> Any:
    """``value`` as ``column`` stores it, or ``_BAD``."""
    import pyarrow as pa

    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    kind = column.arrow
    if column.role == "join key" and kind is None:
        ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        return value if ok else _BAD
    if column.role == "aggregated column" and kind is None:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return value if ok else _BAD
    if kind is None:
        return value  # no simple spelling: Arrow decides when the table is built
    if pa.types.is_integer(kind):
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if pa.types.is_floating(kind):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else _BAD
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return value if isinstance(value, str) else _BAD
    if pa.types.is_boolean(kind):
        return value if isinstance(value, bool) else _BAD
    if pa.types.is_timestamp(kind):
        moment = _moment(value)
        return _BAD if moment is None else moment
    if pa.types.is_date(kind):
        day = _date(value)
        return _BAD if day is None else day
    try:
        pa.array([value], type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return _BAD
    return value


def _refuse(view: str, column: _Column, value: Any, row: int) -> InvalidInputError:
    wanted = column.declared or ("an int or a str" if column.role == "join key" else "a number")
    if column.role in ("event_time", "created_time"):
        wanted = "a timestamp (a datetime or an ISO 8601 string)"
    shown = "null" if value is None else f"{type(value).__name__} ({value!r:.80})"
    return InvalidInputError(
        f"row {row}: {column.role} {column.name!r} of view {view!r} is {wanted}, got "
        f"{shown}; nothing was written",
        field=column.name,
        row=row,
        view=view,
    )


def _rows(rows: Any) -> list[Mapping[str, Any]]:
    if isinstance(rows, Mapping):
        raise InvalidInputError("rows is a list of rows (or a table), not one row", field="rows")
    if hasattr(rows, "to_pylist") and hasattr(rows, "schema"):  # Arrow
        return list(rows.to_pylist())
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # pandas
        from conveyor.data.frames import to_arrow

        return list(to_arrow(rows).to_pylist())
    if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
        raise InvalidInputError(
            f"rows is a list of rows (or a table), got {type(rows).__name__}", field="rows"
        )
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidInputError(
                f"row {i} is a {type(row).__name__}, not an object of column to value",
                field="rows",
                row=i,
            )
    return list(rows)


def checked_rows(spec: FeaturesSpec, name: str, rows: Any) -> list[dict[str, Any]]:
    """Every row of a push to view ``name``, checked and normalized (times as aware UTC
    datetimes, ints in float features as floats); InvalidInputError naming the field and
    the row at the first bad value. The created time is not filled in."""
    view = spec.views.get(name)
    if view is None:
        raise NotFoundError(
            f"no feature view {name!r}; declared: {', '.join(sorted(spec.views)) or 'none'}",
            view=name,
        )
    given = _rows(rows)
    if not given:
        raise InvalidInputError("a push holds at least one row", field="rows")
    columns = _columns(spec, view)
    out = []
    for i, row in enumerate(given):
        for key in row:
            if key not in columns:
                raise InvalidInputError(
                    f"row {i}: {key!r} is not a column of view {name!r}; a pushed row holds "
                    f"{', '.join(columns)}; nothing was written",
                    field=str(key),
                    row=i,
                    view=name,
                )
        clean: dict[str, Any] = {}
        for column in columns.values():
            if column.name not in row:
                if column.role == "created_time":
                    clean[column.name] = None
                    continue
                what = "give null for a missing value" if column.role == "feature" else "required"
                raise InvalidInputError(
                    f"row {i} has no {column.role} {column.name!r} (view {name!r}: {what}); "
                    "nothing was written",
                    field=column.name,
                    row=i,
                    view=name,
                )
            value = row[column.name]
            if value is None:
                if column.role in ("join key", "event_time"):
                    raise _refuse(name, column, value, i)
                clean[column.name] = None
                continue
            normalized = _value(column, value)
            if normalized is _BAD:
                raise _refuse(name, column, value, i)
            clean[column.name] = normalized
        out.append(clean)
    return out


def _digest(rows: list[dict[str, Any]]) -> str:
    import orjson

    text = orjson.dumps(rows, option=orjson.OPT_SORT_KEYS, default=repr)
    return "sha256:" + hashlib.sha256(text).hexdigest()


def _table(spec: FeaturesSpec, view: ViewSpec, rows: list[dict[str, Any]]) -> pa.Table:
    import pyarrow as pa

    arrays = {}
    for column in _columns(spec, view).values():
        values = [row[column.name] for row in rows]
        kind = column.arrow
        if kind is None:
            present = [v for v in values if v is not None]
            if column.role == "join key":
                mixed = {type(v) for v in present}
                if len(mixed) > 1:
                    raise InvalidInputError(
                        f"join key {column.name!r}: some rows give ints, others strings; "
                        "nothing was written",
                        field=column.name,
                    )
                kind = pa.string() if str in mixed else pa.int64()
            elif column.role == "aggregated column":
                whole = all(isinstance(v, int) for v in present)
                kind = pa.int64() if whole else pa.float64()
        try:
            arrays[column.name] = pa.array(values, type=kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            raise InvalidInputError(
                f"{column.role} {column.name!r}: {exc}; nothing was written", field=column.name
            ) from exc
    return pa.table(arrays)


# -- push ------------------------------------------------------------------------------


def push(
    project: Project,
    view: str,
    rows: Any,
    *,
    actor: str | None = None,
    now: datetime | None = None,
) -> Pushed:
    """Write ``rows`` (dicts, an Arrow table or a pandas frame of the view's output
    columns) to view ``view``: the offline log, then the online store (see the module)."""
    import io

    import pyarrow.parquet as pq

    from conveyor.errors import AlreadyExistsError
    from conveyor.features.events import FEATURES_PUSHED
    from conveyor.features.materialize import online_store
    from conveyor.features.settings import features_of
    from conveyor.features.tables import FeaturePushRecord as R

    spec = features_of(project.spec)
    clean = checked_rows(spec, view, rows)
    definition = spec.views[view]
    digest = _digest(clean)
    logged_before = _logged(project, view, digest)
    if logged_before is not None:
        artifact = logged_before
        table = _read_artifact(project, artifact)
        logged = False
    else:
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        if definition.created_time is not None:
            for row in clean:
                if row[definition.created_time] is None:
                    row[definition.created_time] = moment
        table = _table(spec, definition, clean)
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        artifact = project.artifacts.put(
            buffer.getvalue(), media_type="application/vnd.apache.parquet"
        ).digest
        events = table.column(definition.event_time)
        import pyarrow.compute as pc

        try:
            with project.store.session() as session:
                session.add(
                    R(
                        id=uuid.uuid4().hex,
                        view=view,
                        digest=digest,
                        artifact=artifact,
                        rows=table.num_rows,
                        first_event=pc.min(events).as_py(),
                        last_event=pc.max(events).as_py(),
                        actor=actor,
                    )
                )
            logged = True
        except AlreadyExistsError:  # the same rows, pushed at the same moment by another
            artifact = _logged(project, view, digest) or artifact
            table = _read_artifact(project, artifact)
            logged = False
    written = None
    if definition.features:
        from conveyor.features.materialize import join_keys

        written = online_store(project).write(
            view,
            table,
            join_keys=join_keys(spec, definition),
            event_time=definition.event_time,
            features=[f.name for f in definition.features],
            created_time=definition.created_time,
            ttl=definition.ttl,
            types={f.name: f.type for f in definition.features},
        )
    done = Pushed(
        view,
        table.num_rows,
        written.written if written else 0,
        written.kept if written else 0,
        written.expired if written else 0,
        logged,
        artifact,
    )
    project.events.record(
        FEATURES_PUSHED,
        subject=view,
        actor=actor,
        payload={
            "view": view,
            "rows": done.rows,
            "written": done.written,
            "kept": done.kept,
            "expired": done.expired,
            "logged": done.logged,
            "artifact": done.artifact,
        },
    )
    return done


def _logged(project: Project, view: str, digest: str) -> str | None:
    """The artifact of the push of these rows to ``view`` (None: never pushed)."""
    import sqlalchemy as sa

    from conveyor.features.tables import FeaturePushRecord as R

    with project.store.read() as session:
        found: str | None = session.scalars(
            sa.select(R.artifact).where(R.view == view, R.digest == digest)
        ).first()
    return found


def _read_artifact(project: Project, artifact: str) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(project.artifacts.get(artifact)))


# -- the offline log -----------------------------------------------------------------


def pushed_table(project: Project, view: str) -> pa.Table | None:
    """Every row pushed to ``view``, in the order of the pushes (None: none)."""
    import pyarrow as pa
    import sqlalchemy as sa

    from conveyor.features.tables import FeaturePushRecord as R

    with project.store.read() as session:
        artifacts = list(
            session.scalars(sa.select(R.artifact).where(R.view == view).order_by(R.pushed_at, R.id))
        )
    if not artifacts:
        return None
    tables = [_read_artifact(project, a) for a in artifacts]
    return pa.concat_tables(tables, promote_options="permissive")


def with_pushed(project: Project, name: str, table: pa.Table) -> pa.Table:
    """``table`` (view ``name``'s rows after its transform) and the rows pushed to it, cast
    to ``table``'s columns (a column the pushed rows lack is null)."""
    import pyarrow as pa

    from conveyor.features.sources import FeatureDefinitionError

    pushed = pushed_table(project, name)
    if pushed is None:
        return table
    columns = []
    for field in table.schema:
        if field.name not in pushed.column_names:
            columns.append(pa.nulls(pushed.num_rows, field.type))
            continue
        column = pushed.column(field.name)
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise FeatureDefinitionError(
                f"views.{name}: the pushed rows' {field.name!r} ({column.type}) cannot be read "
                f"as the source's {field.type}: {exc}",
                view=name,
                column=field.name,
            ) from exc
    aligned = pa.Table.from_arrays(columns, schema=table.schema)
    return pa.concat_tables([table, aligned])
