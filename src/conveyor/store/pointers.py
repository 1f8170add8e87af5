"""A named pointer that moves, with optimistic concurrency, an append-only history and rollback.

Model aliases (``fraud@champion`` -> a version), served routes (``fraud`` ->
a traffic policy) and, later, RAG collection aliases are the same thing: a
live row per name holding a value, changed only under optimistic concurrency,
with every change appended to a history table in the same transaction, so the
history answers "who moved it, when and why", "what did it hold at time T",
and where a rollback goes. :class:`PointerTable` is that mechanism once; a
kind of pointer subclasses it, names its two ORM tables and says how a value
is read from and written to them::

    class Aliases(PointerTable[str]):
        key_columns = ("model", "alias")          # the live row's primary key

        def value(self, head): return head.version_id
        def write(self, session, key, head, change): ...   # create or update the live row
        def record(self, head, change): ...                # the history row
        def previous(self, session, key, head): ...        # what a rollback restores

    aliases = Aliases(store, ModelAliasRecord, AliasHistoryRecord)
    aliases.move(("fraud", "champion"), version_id, actor="ana", reason="beats v3")

Writes are *conditional* when the caller passes ``expected`` (the token it
read, :meth:`PointerTable.token`: the row version by default, 0 when the
pointer must not exist yet): a pointer that moved meanwhile is refused with
ConcurrentUpdateError. Without ``expected`` a write that races another is made
again on the fresh row (:func:`~conveyor.store.retry.retry_on_conflict`), so
both land in the history, one after the other. A rollback reads the live row
and its previous value together and writes back conditionally, so it never
undoes a move it did not see.

Events are the callers' business (each kind has its own), as are listings
that join other tables.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from conveyor.errors import (
    AlreadyExistsError,
    ConcurrentUpdateError,
    InvalidInputError,
    NotFoundError,
)
from conveyor.store.retry import retry_on_conflict

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from conveyor.store.database import MetadataStore

__all__ = ["Change", "Key", "Moved", "PointerTable", "Previous", "check_alias"]

_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,99}$")


def check_alias(alias: str) -> str:
    """An alias name, a model's or a collection's: 1 to 100 letters, digits, '_' or '-',
    starting with a letter (not a number, so ``name@3`` is always a version and
    ``name@live`` an alias; ``latest`` is reserved: the newest version)."""
    if not isinstance(alias, str) or not _ALIAS.match(alias) or alias == "latest":
        raise InvalidInputError(
            f"alias {alias!r}: use 1 to 100 letters, digits, '_' or '-', starting with a "
            "letter ('latest' is reserved)",
            field="alias",
        )
    return alias


V = TypeVar("V")
#: A pointer's name: the primary key of its live row, in ``key_columns`` order.
Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Change(Generic[V]):
    """One move about to be written: what :meth:`PointerTable.write` and ``record`` get."""

    key: Key
    before: V | None
    """What the pointer held (None: it did not exist)."""
    after: V
    actor: str | None
    reason: str | None
    at: datetime
    extra: Mapping[str, Any] = field(default_factory=dict)
    """What a kind records beyond the common fields (an alias move's ``forced``)."""


@dataclass(frozen=True, slots=True)
class Moved:
    """What a move left: the live row's columns before it, the live row, the history row."""

    before: Mapping[str, Any] | None
    head: Any
    entry: Any


@dataclass(frozen=True, slots=True)
class Previous(Generic[V]):
    """What a rollback restores: the value, the note its reason starts with, where it came from."""

    value: V
    note: str
    entry: Any


class PointerTable(ABC, Generic[V]):
    """Named pointers kept in the table ``head`` (one row per name) and ``history`` (append-only).

    ``head`` is a mapped class with :class:`~conveyor.store.models.VersionedMixin`
    and the ``key_columns`` as its primary key; ``history`` has the same key
    columns and an ``at`` timestamp. Subclasses implement the four hooks
    :meth:`value`, :meth:`write`, :meth:`record` and :meth:`previous`, and may
    override :meth:`resolve`, :meth:`token`, :meth:`describe` and the errors.
    """

    key_columns: ClassVar[tuple[str, ...]]
    #: History columns that order it newest first (descending).
    newest_first: ClassVar[tuple[str, ...]] = ("at", "id")

    def __init__(self, store: MetadataStore, head: type[Any], history: type[Any]) -> None:
        # The tables are given, not class attributes, so a module declaring a kind of
        # pointer need not import SQLAlchemy until one is used.
        self.store = store
        self.head = head
        self.history = history

    # -- hooks -----------------------------------------------------------------------

    @abstractmethod
    def value(self, head: Any) -> V:
        """The value a live row holds."""

    @abstractmethod
    def write(self, session: Session, key: Key, head: Any | None, change: Change[V]) -> Any:
        """Create the live row (``head`` is None; add it to ``session``) or update it; return it."""

    @abstractmethod
    def record(self, head: Any, change: Change[V]) -> Any:
        """The history row of ``change``; ``head`` is the live row as just written."""

    @abstractmethod
    def previous(self, session: Session, key: Key, head: Any) -> Previous[V]:
        """What a rollback of ``head`` restores; InvalidInputError when nothing came before."""

    def resolve(self, session: Session, key: Key, value: Any) -> V:
        """The value to store for what the caller asked (a version number -> its id, say).

        Runs in the write's transaction, so what it checks holds when the move lands.
        """
        resolved: V = value
        return resolved

    def token(self, head: Any) -> int:
        """What ``expected`` is compared with: the row version (0 for a missing pointer)."""
        version: int = head.version
        return version

    def describe(self, key: Key) -> str:
        return f"pointer {'/'.join(str(k) for k in key)}"

    def missing(self, key: Key) -> NotFoundError:
        return NotFoundError(f"{self.describe(key)} is not set", key=list(key))

    def stale(self, key: Key, current: int, expected: int) -> ConcurrentUpdateError:
        """The error of a conditional write whose ``expected`` token is not the current one."""
        return ConcurrentUpdateError(
            f"{self.describe(key)} is at {current}, not {expected}: someone moved it since; "
            "read it again and retry",
            key=list(key),
            current=current,
            expected=expected,
        )

    def raced(self, key: Key, expected: int) -> ConcurrentUpdateError:
        """The error of a conditional write that lost a race inside the database."""
        return ConcurrentUpdateError(
            f"{self.describe(key)} was moved by someone else since {expected} was read; "
            "read it again and retry",
            key=list(key),
            expected=expected,
        )

    # -- moving ----------------------------------------------------------------------

    def move(
        self,
        key: Key,
        value: Any,
        *,
        expected: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        **extra: Any,
    ) -> Moved:
        """Point ``key`` at ``value`` and append the move to the history, in one transaction.

        ``expected`` makes it conditional (see the module); without it a move
        that loses a race is made again on the fresh row.
        """
        stale: list[BaseException] = []

        def once(wanted: int | None) -> Moved:
            from conveyor.store.types import utcnow

            with self.store.session() as session:
                head = self._head(session, key)
                current = 0 if head is None else self.token(head)
                if wanted is not None and current != wanted:
                    stale.append(self.stale(key, current, wanted))
                    raise stale[-1]
                before = None if head is None else _columns(head)
                change = Change(
                    key,
                    None if head is None else self.value(head),
                    self.resolve(session, key, value),
                    actor,
                    reason,
                    utcnow(),
                    extra,
                )
                head = self.write(session, key, head, change)
                entry = self.record(head, change)
                session.add(entry)
                session.flush()
                return Moved(before, head, entry)

        if expected is None:
            return retry_on_conflict(lambda: once(None), what=f"moving {self.describe(key)}")
        try:
            return once(expected)
        except (ConcurrentUpdateError, AlreadyExistsError) as exc:
            if stale and exc is stale[-1]:
                raise  # our own check: its message says where the pointer is
            # The row moved between our read and our write (its version), or
            # another writer created the pointer first (its key).
            raise self.raced(key, expected) from exc

    def rollback(
        self,
        key: Key,
        *,
        actor: str | None,
        reason: str | None = None,
        check: Callable[[Previous[V]], None] | None = None,
    ) -> tuple[Moved, Previous[V]]:
        """Move ``key`` back to the value it held before its last move; a new history entry.

        The live row and its previous value are read together, ``check`` (if
        any) may refuse the restore, and the write is conditional on the row
        read: a pointer that moves meanwhile is refused (ConcurrentUpdateError).
        NotFoundError when the pointer is not set.
        """
        with self.store.read() as session:
            head = self._head(session, key)
            if head is None:
                raise self.missing(key)
            target = self.previous(session, key, head)
            token = self.token(head)
            _detach(session, target.entry)
        if check is not None:
            check(target)
        note = f"{target.note}: {reason}" if reason else target.note
        moved = self.move(key, target.value, expected=token, actor=actor, reason=note)
        return moved, target

    def remove(self, key: Key) -> Any:
        """Delete the live row (its history stays); the row as it was. NotFoundError if unset."""
        with self.store.session() as session:
            head = self._head(session, key)
            if head is None:
                raise self.missing(key)
            session.delete(head)
            return head

    # -- reading ---------------------------------------------------------------------

    def get(self, key: Key) -> Any:
        """The live row of ``key`` (detached); NotFoundError if the pointer is not set."""
        head = self.find(key)
        if head is None:
            raise self.missing(key)
        return head

    def find(self, key: Key) -> Any | None:
        """The live row of ``key``, or None."""
        with self.store.read() as session:
            return _detach(session, self._head(session, key))

    def entries(self, *, limit: int = 100, **where: Any) -> list[Any]:
        """History rows matching ``where`` (key columns, or a prefix of them), newest first."""
        import sqlalchemy as sa

        from conveyor.store.paging import check_limit

        check_limit(limit)
        stmt = sa.select(self.history).filter_by(**where).order_by(*self._newest_first())
        with self.store.read() as session:
            return [_detach(session, r) for r in session.scalars(stmt.limit(limit))]

    def last(self, key: Key, session: Session | None = None) -> Any | None:
        """The newest history row of ``key``, or None."""
        import sqlalchemy as sa

        stmt = sa.select(self.history).filter_by(**self._where(key))
        stmt = stmt.order_by(*self._newest_first()).limit(1)
        if session is not None:
            return session.scalars(stmt).first()
        with self.store.read() as own:
            return _detach(own, own.scalars(stmt).first())

    def at(self, key: Key, when: datetime) -> Any | None:
        """The history row in force at ``when`` (the last move at or before it), or None."""
        import sqlalchemy as sa

        from conveyor.store.types import aware_utc

        moment = aware_utc(when, "when")
        stmt = (
            sa.select(self.history)
            .filter_by(**self._where(key))
            .where(self.history.at <= moment)
            .order_by(*self._newest_first())
            .limit(1)
        )
        with self.store.read() as session:
            return _detach(session, session.scalars(stmt).first())

    # -- helpers ---------------------------------------------------------------------

    def _head(self, session: Session, key: Key) -> Any | None:
        return session.get(self.head, key if len(key) > 1 else key[0])

    def _where(self, key: Key) -> dict[str, Any]:
        return dict(zip(self.key_columns, key, strict=True))

    def _newest_first(self) -> list[Any]:
        return [getattr(self.history, c).desc() for c in self.newest_first]


def _detach(session: Session, row: Any) -> Any:
    """``row``, out of ``session`` before it rolls back, so its loaded values stay readable."""
    if row is not None:
        session.expunge(row)
    return row


def _columns(row: Any) -> dict[str, Any]:
    """A row's column values, read before a write changes them."""
    import sqlalchemy as sa

    return {c.key: getattr(row, c.key) for c in sa.inspect(row).mapper.column_attrs}
