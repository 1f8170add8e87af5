"""The filters and page cursors every read of the event log takes, validated.

``kind`` is an exact kind (``run.started``), a prefix pattern (``run.*``
matches ``run.started`` and ``run.step.done`` but not ``run`` or
``runner.x``), ``*`` (everything), or a sequence of those (any of them: the
audit trail is every kind the catalogue calls ``audit``). ``actor`` is who
did it (``key:NAME``). ``since`` is inclusive and ``until`` exclusive; both
are aware datetimes (a naive one is refused rather than guessed at).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from conveyor.errors import InvalidInputError
from conveyor.events.schema import EPOCH, MAX_TEXT_LENGTH, check_kind
from conveyor.events.table import events
from conveyor.store.paging import decode_cursor, encode_cursor

__all__ = ["Filters", "decode_seq_cursor", "encode_seq_cursor", "to_us"]

_ONE_US_SECONDS = 1_000_000


@dataclass(frozen=True, slots=True)
class Filters:
    """Validated filters; :meth:`clauses` gives the SQL conditions."""

    kind: str | Sequence[str] | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    request_id: str | None = None
    actor: str | None = None

    def __post_init__(self) -> None:
        kind = self.kind
        if kind is not None and not isinstance(kind, str):
            if not isinstance(kind, Sequence) or not kind:
                raise InvalidInputError(
                    f"kind filter must be a string or a non-empty list of strings, got {kind!r}",
                    field="kind",
                )
            object.__setattr__(self, "kind", tuple(kind))
        for one in self.patterns:
            if not isinstance(one, str):
                raise InvalidInputError(
                    f"kind filter must be a string, got {type(one).__name__}", field="kind"
                )
            if one != "*":
                check_kind(one.removesuffix(".*"), field="kind")
        for name in ("subject", "request_id", "actor"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT_LENGTH):
                raise InvalidInputError(
                    f"{name} filter must be a string of at most {MAX_TEXT_LENGTH} characters, "
                    f"got {value!r}",
                    field=name,
                )
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                to_us(value, name)

    @property
    def patterns(self) -> tuple[str, ...]:
        """The kind patterns, any of which an event must match (empty: every kind)."""
        kind = self.kind
        if kind is None:
            return ()
        patterns = (kind,) if isinstance(kind, str) else tuple(kind)
        return () if "*" in patterns else patterns

    def clauses(self) -> list[sa.ColumnElement[bool]]:
        c = events.c
        out: list[sa.ColumnElement[bool]] = []
        patterns = self.patterns
        if patterns:
            exact = [p for p in patterns if not p.endswith(".*")]
            likes = [_prefix_like(c.kind, p[:-1]) for p in patterns if p.endswith(".*")]
            if exact:
                likes.append(c.kind == exact[0] if len(exact) == 1 else c.kind.in_(exact))
            out.append(likes[0] if len(likes) == 1 else sa.or_(*likes))
        if self.subject is not None:
            out.append(c.subject == self.subject)
        if self.request_id is not None:
            out.append(c.request_id == self.request_id)
        if self.actor is not None:
            out.append(c.actor == self.actor)
        if self.since is not None:
            out.append(c.time_us >= to_us(self.since, "since"))
        if self.until is not None:
            out.append(c.time_us < to_us(self.until, "until"))
        return out


def _prefix_like(column: sa.ColumnElement[str], prefix: str) -> sa.ColumnElement[bool]:
    # '_' is a LIKE wildcard and valid in kinds: escape it.
    escaped = prefix.replace("_", "\\_")
    return column.like(f"{escaped}%", escape="\\")


def to_us(value: object, field: str) -> int:
    """An aware datetime as integer microseconds since the Unix epoch."""
    if not isinstance(value, datetime):
        raise InvalidInputError(
            f"{field} must be a datetime, got {type(value).__name__} {value!r}", field=field
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(
            f"{field}={value.isoformat()} has no time zone; pass an aware datetime "
            "(for example datetime(2026, 1, 1, tzinfo=UTC))",
            field=field,
        )
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * _ONE_US_SECONDS + delta.microseconds


def encode_seq_cursor(seq: int, descending: bool) -> str:
    """A page cursor: the last ``seq`` returned, and the direction it is valid for."""
    return encode_cursor(seq, "desc" if descending else "asc")


def decode_seq_cursor(cursor: str, descending: bool) -> int:
    """The ``seq`` in ``cursor``; InvalidInputError if malformed or for the other direction."""
    if not isinstance(cursor, str):
        raise InvalidInputError(f"malformed page cursor {cursor!r}", field="cursor")
    after, direction = decode_cursor(cursor, 2)
    expected = "desc" if descending else "asc"
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise InvalidInputError(f"malformed page cursor {cursor!r}", field="cursor")
    if direction != expected:
        raise InvalidInputError(
            f"page cursor {cursor!r} belongs to a "
            f"{'descending' if direction == 'desc' else 'ascending'} listing",
            field="cursor",
        )
    return after
