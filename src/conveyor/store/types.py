"""Column types that behave the same on SQLite and PostgreSQL.

- :class:`UTCDateTime`: SQLite has no time zones and hands back naive
  datetimes; every timestamp Conveyor stores goes in as UTC and comes back
  as an aware UTC datetime on both backends, so values compare and sort the
  same everywhere.
- :data:`JSONB_DOCUMENT`: JSONB on PostgreSQL (indexable, containment
  queries) and JSON text on SQLite, for documents that are queried (params,
  metrics, tags, artifacts).
- :class:`ExactJSON`: any JSON value (a bare number too), stored as text
  that comes back exactly as it went in, for what a check observed. On
  PostgreSQL it is the textual ``json`` type, because JSONB normalises
  numbers (``1e20`` comes back as the integer ``100000000000000000000``,
  ``-0.0`` as ``0.0``). On SQLite it is TEXT, because a column declared
  ``JSON`` has NUMERIC affinity there: the text ``3.0`` would be stored as
  the integer 3 and ``2**64`` rounded to a float.

:func:`json_value` checks a value is a plain JSON document before it reaches
the database, so a bad value fails with a message naming its field rather
than deep inside a flush.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from conveyor.errors import InvalidInputError

__all__ = [
    "JSONB_DOCUMENT",
    "ExactJSON",
    "UTCDateTime",
    "aware_utc",
    "dump_json",
    "json_value",
    "utcnow",
]


class JsonbDocument(sa.types.TypeDecorator[Any]):
    """JSON, as JSONB on PostgreSQL. The PostgreSQL dialect is imported only when a
    PostgreSQL engine uses the type: a CLI on SQLite never pays for it (~50 ms)."""

    impl = sa.JSON()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())


# Documents are always JSON objects, so SQLite's NUMERIC affinity never touches them.
JSONB_DOCUMENT: sa.types.TypeEngine[Any] = JsonbDocument()

#: The engines' JSON serializer: NaN and infinity are not JSON, and PostgreSQL
#: rejects them while SQLite would store them silently; fail on both instead.
dump_json = partial(json.dumps, allow_nan=False, separators=(",", ":"))


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware_utc(value: datetime, field: str) -> datetime:
    """``value`` in UTC; a naive datetime is refused (its zone is a guess)."""
    if not isinstance(value, datetime):
        raise InvalidInputError(
            f"{field} must be a datetime, got {type(value).__name__} {value!r}", field=field
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(
            f"{field} must be time-zone aware (for example datetime.now(UTC)), got naive {value}",
            field=field,
        )
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01 at UTC+5 is before year 1 in UTC
        raise InvalidInputError(
            f"{field} {value} is out of the representable range in UTC", field=field
        ) from exc


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned as an aware UTC datetime."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            # Repositories convert at their boundary; a naive value here is a bug.
            raise ValueError(f"naive datetime {value} bound to a UTC timestamp column")
        value = value.astimezone(UTC)
        # SQLite would store the offset-less text anyway; strip it so the text
        # form is uniform and sorts lexically in time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class ExactJSON(sa.types.TypeDecorator[Any]):
    """A JSON value kept as its exact text; SQL NULL stands for None."""

    impl = sa.Text()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSON

            return dialect.type_descriptor(JSON(none_as_null=True))
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value  # the json type serialises with the engine's serializer
        return dump_json(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return json.loads(value)


def json_value(value: Any, field: str) -> Any:
    """``value`` as plain JSON types, or InvalidInputError naming ``field``.

    Tuples become lists and numpy scalars their Python value; NaN, infinity,
    non-string keys and other objects are refused.
    """
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(
                f"{field} is {value!r}: only finite numbers can be stored", field=field
            )
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(
                    f"{field} has a key {key!r} of type {type(key).__name__}: keys must be strings",
                    field=field,
                )
            out[key] = json_value(item, f"{field}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [json_value(item, f"{field}[{i}]") for i, item in enumerate(value)]
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return json_value(item(), field)
    raise InvalidInputError(
        f"{field} is a {type(value).__name__} ({value!r}), which cannot be stored as JSON; "
        "use numbers, strings, booleans, None, lists and dicts",
        field=field,
    )
