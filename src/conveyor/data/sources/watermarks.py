"""High-water marks of incremental sources, and reading past them at least once.

::

    extract, commit = incremental(source, store)
    save_somewhere(extract.table)      # may fail: then commit() is never called
    commit()                           # now the watermark moves past these rows

The watermark moves only when the caller says the rows are safely stored,
so a crash in between re-reads the same rows next time: at least once,
never lost. Two ingests of the same source that both read from the same
watermark cannot both commit: the second gets ConcurrentUpdateError (its
rows were read by the first too, so it must not advance a second time).

Values are stored with a type tag in the ``watermarks`` table
(``{"type": "datetime", "value": "2024-05-01T12:00:00+00:00"}``), so ints,
floats, decimals, dates, strings and time-zone-aware datetimes come back
exactly as they went in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from conveyor.errors import (
    AlreadyExistsError,
    ConcurrentUpdateError,
    InvalidInputError,
)

if TYPE_CHECKING:
    from conveyor.data.sources.base import Extract, Source
    from conveyor.store.database import MetadataStore

__all__ = ["Watermark", "WatermarkRepository", "decode_value", "encode_value", "incremental"]

_NAME_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Watermark:
    """The stored high-water mark of a source; ``expected_version`` compares ``version``."""

    source: str
    column: str
    value: Any
    version: int
    updated_at: datetime


def encode_value(value: Any, field: str = "watermark") -> dict[str, Any]:
    """A watermark value as a tagged JSON document that decodes to an equal value."""
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        value = value.item()
    if isinstance(value, bool):
        raise InvalidInputError(
            f"{field} is a boolean ({value!r}); a watermark column must be ordered "
            "(a number, a timestamp, a date or a string)",
            field=field,
        )
    if isinstance(value, int):
        return {"type": "int", "value": value}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{field} is {value!r}: not a finite number", field=field)
        return {"type": "float", "value": value}
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidInputError(f"{field} is {value!r}: not a finite number", field=field)
        return {"type": "decimal", "value": str(value)}
    if isinstance(value, datetime):
        # datetime.isoformat, not the subclass's: a pandas Timestamp keeps microseconds.
        return {"type": "datetime", "value": datetime.isoformat(value)}
    if isinstance(value, date):
        return {"type": "date", "value": value.isoformat()}
    if isinstance(value, str):
        return {"type": "str", "value": value}
    raise InvalidInputError(
        f"{field} is a {type(value).__name__} ({value!r}); a watermark must be a number, "
        "a decimal, a datetime, a date or a string",
        field=field,
    )


def decode_value(document: Any, field: str = "watermark") -> Any:
    """The value :func:`encode_value` encoded."""
    if document is None:
        return None
    try:
        tag, raw = document["type"], document["value"]
        if tag == "int":
            return int(raw)
        if tag == "float":
            return float(raw)
        if tag == "decimal":
            return Decimal(raw)
        if tag == "datetime":
            return datetime.fromisoformat(raw)
        if tag == "date":
            return date.fromisoformat(raw)
        if tag == "str":
            return str(raw)
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise InvalidInputError(
            f"stored {field} {document!r} cannot be decoded: {exc}", field=field
        ) from exc
    raise InvalidInputError(f"stored {field} has an unknown type tag {tag!r}", field=field)


class WatermarkRepository:
    """Read and advance watermarks in a :class:`~conveyor.store.MetadataStore`."""

    def __init__(self, store: MetadataStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"<WatermarkRepository of {self._store!r}>"

    def get(self, source: str) -> Any | None:
        """The watermark value of ``source``, or None if it has never advanced."""
        state = self.state(source)
        return None if state is None else state.value

    def state(self, source: str) -> Watermark | None:
        """The stored watermark with its column and version, or None."""
        from conveyor.data.tables import WatermarkRecord

        _check_name(source)
        with self._store.read() as session:
            record = session.get(WatermarkRecord, source)
            return None if record is None else _snapshot(record)

    def list(self) -> list[Watermark]:
        """Every stored watermark, by source name."""
        import sqlalchemy as sa

        from conveyor.data.tables import WatermarkRecord

        with self._store.read() as session:
            records = session.scalars(sa.select(WatermarkRecord).order_by(WatermarkRecord.source))
            return [_snapshot(r) for r in records]

    def advance(
        self,
        source: str,
        column: str,
        value: Any,
        *,
        expected_version: int | None = None,
    ) -> Watermark:
        """Move ``source``'s watermark forward to ``value``.

        ``expected_version`` makes it conditional: the version read before
        the extract (0 when nothing was stored yet). If someone else moved
        the watermark since, ConcurrentUpdateError and nothing changes. A
        value below the stored one is refused (InvalidInputError): a
        watermark never moves backwards. The same value is accepted and
        changes nothing.
        """
        from conveyor.data.tables import WatermarkRecord
        from conveyor.store.types import utcnow

        _check_name(source)
        _check_name(column, "column")
        document = encode_value(value)
        try:
            with self._store.session() as session:
                record = session.get(WatermarkRecord, source, with_for_update=True)
                if record is None:
                    if expected_version not in (None, 0):
                        raise ConcurrentUpdateError(
                            f"the watermark of {source!r} was expected at version "
                            f"{expected_version} but none is stored (it was reset)",
                            source=source,
                        )
                    record = WatermarkRecord(
                        source=source, column=column, value=document, updated_at=utcnow()
                    )
                    session.add(record)
                    session.flush()
                    return _snapshot(record)
                if expected_version is not None and record.version != expected_version:
                    raise ConcurrentUpdateError(
                        f"the watermark of {source!r} moved (version {record.version}, expected "
                        f"{expected_version}) since these rows were read: another ingest read "
                        "them too; read again from the new watermark",
                        source=source,
                        version=record.version,
                        expected_version=expected_version,
                    )
                if record.column != column:
                    raise InvalidInputError(
                        f"the watermark of {source!r} is on column {record.column!r}, not "
                        f"{column!r}; reset it to track another column",
                        source=source,
                        column=column,
                    )
                current = decode_value(record.value)
                try:
                    backwards = value < current
                except TypeError:
                    raise InvalidInputError(
                        f"the watermark of {source!r} is {current!r} "
                        f"({type(current).__name__}); {value!r} ({type(value).__name__}) "
                        "cannot be compared with it",
                        source=source,
                    ) from None
                if backwards:
                    raise InvalidInputError(
                        f"the watermark of {source!r} is {current!r}; it never moves back to "
                        f"{value!r} (reset it to re-read everything)",
                        source=source,
                    )
                if value == current:
                    return _snapshot(record)
                record.value = document
                session.flush()
                return _snapshot(record)
        except AlreadyExistsError as exc:
            raise ConcurrentUpdateError(
                f"another ingest stored the first watermark of {source!r} at the same time; "
                "read again from it",
                source=source,
            ) from exc

    def reset(self, source: str) -> bool:
        """Forget ``source``'s watermark (the next incremental read starts over)."""
        from conveyor.data.tables import WatermarkRecord

        _check_name(source)
        with self._store.session() as session:
            record = session.get(WatermarkRecord, source)
            if record is None:
                return False
            session.delete(record)
            return True


def incremental(source: Source, store: MetadataStore) -> tuple[Extract, Callable[[], None]]:
    """Read ``source`` past its stored watermark; ``commit()`` advances it.

    Call ``commit()`` only once the rows are safely stored downstream. Not
    calling it (a failure in between) leaves the watermark where it was, so
    the next call reads the same rows again. Calling it twice does nothing
    the second time.
    """
    column = source.watermark_column
    if column is None:
        raise InvalidInputError(
            f"source {source.name!r} has no watermark_column, so it cannot be read incrementally",
            field="watermark_column",
        )
    repository = WatermarkRepository(store)
    state = repository.state(source.name)
    if state is not None and state.column != column:
        raise InvalidInputError(
            f"the stored watermark of {source.name!r} is on column {state.column!r} but the "
            f"source now uses {column!r}; reset it (WatermarkRepository.reset) to start over",
            source=source.name,
            column=column,
        )
    extract = source.read(after=None if state is None else state.value)
    expected = 0 if state is None else state.version
    done = False

    def commit() -> None:
        nonlocal done
        if done:
            return
        if extract.watermark is not None:
            repository.advance(source.name, column, extract.watermark, expected_version=expected)
        done = True

    return extract, commit


def _snapshot(record: Any) -> Watermark:
    return Watermark(
        source=record.source,
        column=record.column,
        value=decode_value(record.value),
        version=record.version,
        updated_at=record.updated_at,
    )


def _check_name(name: Any, field: str = "source") -> None:
    if not isinstance(name, str) or not name or len(name) > _NAME_LIMIT:
        raise InvalidInputError(
            f"{field} must be a non-empty string of at most {_NAME_LIMIT} characters, got {name!r}",
            field=field,
        )
