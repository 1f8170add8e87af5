"""Aliases (``champion``, ``challenger``, any name): moves, history, time travel, rollback.

An alias is one row (model, alias) -> version under optimistic concurrency:
a move that names ``expected_version`` (the alias row's version it read)
fails with ConcurrentUpdateError when someone moved the alias meanwhile, so
two concurrent moves never silently lose one. Each move appends to
``alias_history`` in the same transaction, which answers "who moved it,
when and why", "what was champion at time T", and where a rollback goes.
The mechanism is the store's pointer with history
(:class:`conveyor.store.pointers.PointerTable`), shared with served routes;
this module says what an alias holds (a version id of its model).

A gated alias (``champion`` by default) only moves to a version whose gates
passed (:mod:`conveyor.registry.promotion`); a move past failed gates is
``forced=True`` with a ``reason``, and both are recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConcurrentUpdateError, InvalidInputError, NotFoundError
from conveyor.registry.events import MODEL_ALIAS_MOVED
from conveyor.registry.versions import AliasMove, ModelVersion
from conveyor.store.pointers import Change, Key, PointerTable, Previous, check_alias

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from conveyor.events.log import EventLog
    from conveyor.registry.tables import ModelAliasRecord, ModelVersionRecord
    from conveyor.store.database import MetadataStore

__all__ = ["Alias", "AliasesMixin", "check_alias"]


@dataclass(frozen=True, slots=True)
class Alias:
    """Where an alias points now; ``version`` is the row version to pass as ``expected_version``."""

    model: str
    alias: str
    version_id: str
    number: int
    updated_at: datetime
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "alias": self.alias,
            "version_id": self.version_id,
            "number": self.number,
            "updated_at": self.updated_at.isoformat(),
            "version": self.version,
        }


class AliasPointers(PointerTable[str]):
    """Aliases as pointers: ``(model, alias)`` -> a version id, in ``model_aliases``.

    ``resolve`` turns what a caller names (a number, ``name@N``, an id, a
    :class:`ModelVersion`) into the id of a version of that model, inside the
    move's transaction.
    """

    key_columns = ("model", "alias")

    def __init__(
        self,
        store: MetadataStore,
        version_row: Callable[[Session, str, Any], ModelVersionRecord],
    ) -> None:
        from conveyor.registry.tables import AliasHistoryRecord, ModelAliasRecord

        super().__init__(store, ModelAliasRecord, AliasHistoryRecord)
        self._version_row = version_row

    def describe(self, key: Key) -> str:
        return f"alias {key[0]}@{key[1]}"

    def missing(self, key: Key) -> NotFoundError:
        return NotFoundError(f"model {key[0]!r} has no alias {key[1]!r}", model=key[0])

    def stale(self, key: Key, current: int, expected: int) -> ConcurrentUpdateError:
        return self.raced(key, expected)

    def raced(self, key: Key, expected: int) -> ConcurrentUpdateError:
        return ConcurrentUpdateError(
            f"alias {key[0]}@{key[1]} was moved by someone else since version {expected} "
            "was read; read it again and retry",
            model=key[0],
            alias=key[1],
        )

    def resolve(self, session: Session, key: Key, value: Any) -> str:
        return self._version_row(session, key[0], value).id

    def value(self, head: ModelAliasRecord) -> str:
        return head.version_id

    def write(
        self, session: Session, key: Key, head: ModelAliasRecord | None, change: Change[str]
    ) -> ModelAliasRecord:
        if head is None:
            head = self.head(model=key[0], alias=key[1], version_id=change.after)
            session.add(head)
        else:
            head.version_id = change.after
        head.updated_at = change.at
        return head

    def record(self, head: ModelAliasRecord, change: Change[str]) -> Any:
        return self.history(
            model=head.model,
            alias=head.alias,
            from_version_id=change.before,
            to_version_id=change.after,
            actor=change.actor,
            reason=change.reason,
            forced=bool(change.extra.get("forced", False)),
            at=change.at,
        )

    def previous(self, session: Session, key: Key, head: ModelAliasRecord) -> Previous[str]:
        last = self.last(key, session)
        if last is None or last.from_version_id is None:
            raise InvalidInputError(
                f"alias {key[0]}@{key[1]} has no previous version to roll back to", field="alias"
            )
        if last.to_version_id != head.version_id:  # pragma: no cover: one transaction reads both
            raise ConcurrentUpdateError(
                f"alias {key[0]}@{key[1]} moved while rolling back; try again", model=key[0]
            )
        return Previous(last.from_version_id, "rollback", last)


class AliasesMixin:
    """The alias half of :class:`conveyor.registry.Registry`."""

    store: MetadataStore
    events: EventLog | None

    if TYPE_CHECKING:

        def _version_row(self, session: Session, name: str, version: Any) -> ModelVersionRecord: ...

        def by_id(self, version_id: str) -> ModelVersion: ...

        def _admit(self, name: str, alias: str, version: Any, forced: bool) -> None: ...

    @property
    def _alias_pointers(self) -> AliasPointers:
        return AliasPointers(self.store, self._version_row)

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int | str | ModelVersion,
        *,
        actor: str | None,
        reason: str | None = None,
        forced: bool = False,
        expected_version: int | None = None,
    ) -> AliasMove:
        """Point ``alias`` of model ``name`` at ``version`` and record the move.

        ``expected_version`` is the alias's row version as read (0: the alias
        must not exist yet); when the alias has moved since, the move is
        refused with ConcurrentUpdateError. Without it, a move that races
        another is retried on the fresh state, and both are recorded.
        """
        check_alias(alias)
        if forced and not reason:
            raise InvalidInputError("a forced alias move needs a reason", field="reason")
        self._admit(name, alias, version, forced)
        moved = self._alias_pointers.move(
            (name, alias),
            version,
            expected=expected_version,
            actor=actor,
            reason=reason,
            forced=forced,
        )
        move = AliasMove.from_record(moved.entry)
        self._emit_move(move, rollback=False)
        return move

    def _emit_move(self, move: AliasMove, *, rollback: bool) -> None:
        if self.events is None:
            return
        self.events.record(
            MODEL_ALIAS_MOVED,
            subject=move.model,
            actor=move.actor,
            payload={
                "alias": move.alias,
                "from_version_id": move.from_version_id,
                "to_version_id": move.to_version_id,
                "reason": move.reason,
                "forced": move.forced,
                "rollback": rollback,
            },
        )

    def get_alias(self, name: str, alias: str) -> Alias:
        """Where ``alias`` points now (NotFoundError if it was never set)."""
        import sqlalchemy as sa

        from conveyor.registry.tables import ModelAliasRecord as A
        from conveyor.registry.tables import ModelVersionRecord as V

        with self.store.read() as session:
            found = session.execute(
                sa.select(A, V.number)
                .join(V, V.id == A.version_id)
                .where(A.model == name, A.alias == alias)
            ).first()
            if found is None:
                raise NotFoundError(f"model {name!r} has no alias {alias!r}", model=name)
            row, number = found
            return Alias(name, alias, row.version_id, number, row.updated_at, row.version)

    def aliases(self, name: str) -> dict[str, int]:
        """Every alias of model ``name`` and the version number it points at."""
        import sqlalchemy as sa

        from conveyor.registry.tables import ModelAliasRecord as A
        from conveyor.registry.tables import ModelVersionRecord as V

        with self.store.read() as session:
            rows = session.execute(
                sa.select(A.alias, V.number)
                .join(V, V.id == A.version_id)
                .where(A.model == name)
                .order_by(A.alias)
            )
            return {alias: number for alias, number in rows}

    def alias_history(
        self, name: str, alias: str | None = None, *, limit: int = 100
    ) -> list[AliasMove]:
        """Moves of ``alias`` (or of every alias of ``name``), newest first."""
        where = {"model": name} if alias is None else {"model": name, "alias": alias}
        entries = self._alias_pointers.entries(limit=limit, **where)
        return [AliasMove.from_record(r) for r in entries]

    def alias_at(self, name: str, alias: str, when: datetime) -> ModelVersion | None:
        """The version ``alias`` pointed at, at time ``when`` (None if it was not set then)."""
        last = self._alias_pointers.at((name, alias), when)
        target = None if last is None else last.to_version_id
        return None if target is None else self.by_id(target)

    def rollback(
        self, name: str, alias: str, *, actor: str | None, reason: str | None = None
    ) -> AliasMove:
        """Move ``alias`` back to the version it pointed at before its last move.

        Refused (ConcurrentUpdateError) when the alias moves while this runs;
        InvalidInputError when there is no previous holder.
        """
        moved, _ = self._alias_pointers.rollback((name, alias), actor=actor, reason=reason)
        move = AliasMove.from_record(moved.entry)
        self._emit_move(move, rollback=True)
        return move
