"""Aliases (``champion``, ``challenger``, any name): moves, history, time travel, rollback.

An alias is one row (model, alias) -> version under optimistic concurrency:
a move that names ``expected_version`` (the alias row's version it read)
fails with ConcurrentUpdateError when someone moved the alias meanwhile, so
two concurrent moves never silently lose one. Each move appends to
``alias_history`` in the same transaction, which answers "who moved it,
when and why", "what was champion at time T", and where a rollback goes.

A gated alias (``champion`` by default) only moves to a version whose gates
passed (:mod:`conveyor.registry.promotion`); a move past failed gates is
``forced=True`` with a ``reason``, and both are recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from conveyor.errors import (
    AlreadyExistsError,
    ConcurrentUpdateError,
    InvalidInputError,
    NotFoundError,
)
from conveyor.registry.versions import AliasMove, ModelVersion
from conveyor.store.retry import retry_on_conflict

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from conveyor.events.log import EventLog
    from conveyor.registry.tables import ModelVersionRecord
    from conveyor.store.database import MetadataStore

__all__ = ["Alias", "AliasesMixin", "check_alias"]

_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,99}$")
_RESERVED = ("latest",)


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.match(alias) or alias in _RESERVED:
        raise InvalidInputError(
            f"alias {alias!r}: use 1 to 100 letters, digits, '_' or '-', starting with a "
            "letter ('latest' is reserved)",
            field="alias",
        )
    return alias


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


class AliasesMixin:
    """The alias half of :class:`conveyor.registry.Registry`."""

    store: MetadataStore
    events: EventLog | None

    if TYPE_CHECKING:

        def _version_row(self, session: Session, name: str, version: Any) -> ModelVersionRecord: ...

        def by_id(self, version_id: str) -> ModelVersion: ...

        def _admit(self, name: str, alias: str, version: Any, forced: bool) -> None: ...

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
        move_once = partial(self._move, name, alias, version, actor, reason, forced)
        if expected_version is None:
            # Unconditional: a move that raced another is made again on the fresh row.
            move = retry_on_conflict(partial(move_once, None), what=f"moving alias {name}@{alias}")
        else:
            try:
                move = move_once(expected_version)
            except (ConcurrentUpdateError, AlreadyExistsError) as exc:
                raise ConcurrentUpdateError(
                    f"alias {name}@{alias} was moved by someone else since version "
                    f"{expected_version} was read; read it again and retry",
                    model=name,
                    alias=alias,
                ) from exc
        self._emit_move(move, rollback=False)
        return move

    def _move(
        self,
        name: str,
        alias: str,
        version: Any,
        actor: str | None,
        reason: str | None,
        forced: bool,
        expected_version: int | None,
    ) -> AliasMove:
        from conveyor.registry.tables import AliasHistoryRecord, ModelAliasRecord
        from conveyor.store.types import utcnow

        with self.store.session() as session:
            target = self._version_row(session, name, version)
            row = session.get(ModelAliasRecord, (name, alias))
            current = 0 if row is None else row.version
            if expected_version is not None and current != expected_version:
                raise ConcurrentUpdateError(
                    f"alias {name}@{alias} is at version {current}, not {expected_version}",
                    model=name,
                    alias=alias,
                )
            now = utcnow()
            if row is None:
                previous = None
                session.add(
                    ModelAliasRecord(model=name, alias=alias, version_id=target.id, updated_at=now)
                )
            else:
                previous = row.version_id
                row.version_id = target.id
                row.updated_at = now
            entry = AliasHistoryRecord(
                model=name,
                alias=alias,
                from_version_id=previous,
                to_version_id=target.id,
                actor=actor,
                reason=reason,
                forced=forced,
                at=now,
            )
            session.add(entry)
            session.flush()
            return AliasMove.from_record(entry)

    def _emit_move(self, move: AliasMove, *, rollback: bool) -> None:
        if self.events is None:
            return
        self.events.emit(
            "model.alias_moved",
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
            durable=True,
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
        import sqlalchemy as sa

        from conveyor.registry.tables import AliasHistoryRecord as H
        from conveyor.store.paging import check_limit

        check_limit(limit)
        stmt = sa.select(H).where(H.model == name)
        if alias is not None:
            stmt = stmt.where(H.alias == alias)
        stmt = stmt.order_by(H.at.desc(), H.id.desc()).limit(limit)
        with self.store.read() as session:
            return [AliasMove.from_record(r) for r in session.scalars(stmt)]

    def alias_at(self, name: str, alias: str, when: datetime) -> ModelVersion | None:
        """The version ``alias`` pointed at, at time ``when`` (None if it was not set then)."""
        import sqlalchemy as sa

        from conveyor.registry.tables import AliasHistoryRecord as H
        from conveyor.store.types import aware_utc

        at = aware_utc(when, "when")
        with self.store.read() as session:
            last = session.scalars(
                sa.select(H)
                .where(H.model == name, H.alias == alias, H.at <= at)
                .order_by(H.at.desc(), H.id.desc())
                .limit(1)
            ).first()
            target = None if last is None else last.to_version_id
        return None if target is None else self.by_id(target)

    def rollback(
        self, name: str, alias: str, *, actor: str | None, reason: str | None = None
    ) -> AliasMove:
        """Move ``alias`` back to the version it pointed at before its last move.

        Refused (ConcurrentUpdateError) when the alias moves while this runs;
        InvalidInputError when there is no previous holder.
        """
        current = self.get_alias(name, alias)
        last = self.alias_history(name, alias, limit=1)
        if not last or last[0].from_version_id is None:
            raise InvalidInputError(
                f"alias {name}@{alias} has no previous version to roll back to", field="alias"
            )
        previous = last[0].from_version_id
        if last[0].to_version_id != current.version_id:
            raise ConcurrentUpdateError(
                f"alias {name}@{alias} moved while rolling back; try again", model=name
            )
        move = self._move(
            name,
            alias,
            previous,
            actor,
            f"rollback: {reason}" if reason else "rollback",
            False,
            current.version,
        )
        self._emit_move(move, rollback=True)
        return move
