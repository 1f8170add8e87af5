"""Route policies in the metadata store: set, read, history, rollback, and the cheap poll.

::

    routes = RouteStore(store, events, registry)
    state = routes.set("fraud", RoutePolicy.canary(3, 4, 10), actor="ana", reason="try v4")
    routes.revisions()                  # {"fraud": 2}: what every server polls
    routes.rollback("fraud", actor="ana", reason="p99 up")   # revision 3 = revision 1's policy

One ``routes`` row per model holds the live policy and its ``revision``
(1, 2, 3... per model, never reused); every write appends the same policy
to ``route_history`` in the same transaction, so the history is complete
and append-only, and a rollback is a new revision.

Two writers never lose a write. ``expected_revision`` (the revision the
caller read; 0: the route must not exist) makes a write conditional: if
someone wrote meanwhile it fails with ConcurrentUpdateError. Without it, a
write that races another is retried on the fresh row and both land as
consecutive revisions.
"""

from __future__ import annotations

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
from conveyor.serving.routes import RoutePolicy
from conveyor.store.retry import retry_on_conflict

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from conveyor.events.log import EventLog
    from conveyor.registry import Registry
    from conveyor.serving.tables import RouteRecord
    from conveyor.store.database import MetadataStore

__all__ = ["RouteState", "RouteStore"]


@dataclass(frozen=True, slots=True)
class RouteState:
    """A model's route at one revision (the live one, or a history entry)."""

    model: str
    revision: int
    policy: RoutePolicy
    actor: str | None
    reason: str | None
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "revision": self.revision,
            "policy": self.policy.to_dict(),
            "actor": self.actor,
            "reason": self.reason,
            "updated_at": self.updated_at.isoformat(),
        }


class RouteStore:
    """Every model's live route policy, its history, and rollback.

    ``registry`` (optional) checks that every version a policy names is
    registered before it is stored; ``events`` (optional) receives a durable
    audit event per change (``route.set``, ``route.rolled_back``,
    ``route.deleted``) carrying the old and new policy.
    """

    def __init__(
        self,
        store: MetadataStore,
        events: EventLog | None,
        registry: Registry | None = None,
    ) -> None:
        self.store = store
        self.events = events
        self.registry = registry

    # -- writing -----------------------------------------------------------------

    def set(
        self,
        model: str,
        policy: RoutePolicy | dict[str, Any],
        *,
        actor: str | None = None,
        reason: str | None = None,
        expected_revision: int | None = None,
    ) -> RouteState:
        """Make ``policy`` the live route of ``model`` as a new revision.

        NotFoundError when a version it names is not registered;
        ConcurrentUpdateError when ``expected_revision`` is not the current
        revision (0: the route must not exist yet).
        """
        from conveyor.registry.registry import check_model_name

        check_model_name(model)
        policy = policy if isinstance(policy, RoutePolicy) else RoutePolicy.from_dict(policy)
        _check_expected(expected_revision)
        self._check_versions(model, policy)
        old, new = self._write(model, policy, actor, reason, expected_revision)
        self._emit("route.set", new, old=old)
        return new

    def rollback(self, model: str, *, actor: str | None, reason: str | None = None) -> RouteState:
        """Write the previous revision's policy as a new revision.

        NotFoundError when ``model`` has no route; InvalidInputError when
        its history holds no earlier revision. Rolling back twice returns
        to where the first rollback started (each rollback is a revision).
        """
        current = self.get(model)
        previous = self._history_entry(model, current.revision - 1)
        if previous is None:
            raise InvalidInputError(
                f"the route of {model!r} has no revision before {current.revision} to roll back to",
                field="model",
                model=model,
            )
        self._check_versions(model, previous.policy)
        note = f"rollback to revision {previous.revision}"
        old, new = self._write(
            model,
            previous.policy,
            actor,
            f"{note}: {reason}" if reason else note,
            current.revision,
        )
        self._emit("route.rolled_back", new, old=old, restored_revision=previous.revision)
        return new

    def delete(
        self, model: str, *, actor: str | None = None, reason: str | None = None
    ) -> RouteState:
        """Remove ``model``'s route (undeploy); its history stays. Returns the removed state.

        A later :meth:`set` continues the revision numbers after the history's last.
        """
        from conveyor.serving.tables import RouteRecord

        with self.store.session() as session:
            row = session.get(RouteRecord, model)
            if row is None:
                raise NotFoundError(f"model {model!r} has no route", model=model)
            removed = _state(row)
            session.delete(row)
        if self.events is not None:
            self.events.emit(
                "route.deleted",
                subject=model,
                actor=actor,
                payload={
                    "revision": removed.revision,
                    "old": removed.policy.to_dict(),
                    "reason": reason,
                },
                durable=True,
            )
        return removed

    def _write(
        self,
        model: str,
        policy: RoutePolicy,
        actor: str | None,
        reason: str | None,
        expected_revision: int | None,
    ) -> tuple[RouteState | None, RouteState]:
        def once(expected: int | None) -> tuple[RouteState | None, RouteState]:
            with self.store.session() as session:
                return self._write_once(session, model, policy, actor, reason, expected)

        if expected_revision is None:
            # Unconditional: a write that raced another is made again on the fresh row.
            return retry_on_conflict(partial(once, None), what=f"writing the route of {model!r}")
        try:
            return once(expected_revision)
        except (ConcurrentUpdateError, AlreadyExistsError) as exc:
            # Another writer got there between our read and our write (the row's
            # version moved, or both inserted the first revision).
            if isinstance(exc, ConcurrentUpdateError) and "revision" in exc.context:
                raise  # the revision check itself: its message says where the route is
            raise ConcurrentUpdateError(
                f"the route of {model!r} was changed by someone else since revision "
                f"{expected_revision} was read; read it again and retry",
                model=model,
                expected_revision=expected_revision,
            ) from exc

    def _write_once(
        self,
        session: Session,
        model: str,
        policy: RoutePolicy,
        actor: str | None,
        reason: str | None,
        expected_revision: int | None,
    ) -> tuple[RouteState | None, RouteState]:
        import sqlalchemy as sa

        from conveyor.serving.tables import RouteHistoryRecord as H
        from conveyor.serving.tables import RouteRecord
        from conveyor.store.types import utcnow

        row = session.get(RouteRecord, model)
        current = 0 if row is None else row.revision
        if expected_revision is not None and current != expected_revision:
            raise ConcurrentUpdateError(
                f"the route of {model!r} is at revision {current}, not {expected_revision}: "
                "someone changed it since; read it again and retry",
                model=model,
                revision=current,
                expected_revision=expected_revision,
            )
        document = policy.to_dict()
        now = utcnow()
        if row is None:
            old = None
            # After a delete the history remains: continue its numbering.
            last = session.scalar(sa.select(sa.func.max(H.revision)).where(H.model == model))
            revision = (last or 0) + 1
            row = RouteRecord(
                model=model,
                revision=revision,
                policy=document,
                actor=actor,
                reason=reason,
                updated_at=now,
            )
            session.add(row)
        else:
            old = _state(row)
            revision = current + 1
            row.revision = revision
            row.policy = document
            row.actor = actor
            row.reason = reason
            row.updated_at = now
        session.add(
            H(
                model=model,
                revision=revision,
                policy=document,
                actor=actor,
                reason=reason,
                at=now,
            )
        )
        session.flush()
        return old, RouteState(model, revision, policy, actor, reason, now)

    def _check_versions(self, model: str, policy: RoutePolicy) -> None:
        """Every version the policy names is registered (and not archived)."""
        if self.registry is None:
            return
        where = [(f"versions[{i}].version", a.version) for i, a in enumerate(policy.versions)]
        where += [(f"shadow[{i}]", v) for i, v in enumerate(policy.shadow)]
        where += [(f"flags[{i}].version", f.version) for i, f in enumerate(policy.flags)]
        for field, number in where:
            try:
                found = self.registry.get(model, number)
            except NotFoundError:
                raise NotFoundError(
                    f"route for {model!r}: {field} names version {number}, which is not "
                    f"registered (no {model}@{number})",
                    model=model,
                    version=number,
                    field=field,
                ) from None
            if found.status == "archived":
                raise InvalidInputError(
                    f"route for {model!r}: {field} names version {number}, which is archived",
                    model=model,
                    version=number,
                    field=field,
                )

    def _emit(self, kind: str, new: RouteState, *, old: RouteState | None, **extra: Any) -> None:
        if self.events is None:
            return
        self.events.emit(
            kind,
            subject=new.model,
            actor=new.actor,
            payload={
                "revision": new.revision,
                "old_revision": None if old is None else old.revision,
                "old": None if old is None else old.policy.to_dict(),
                "new": new.policy.to_dict(),
                "reason": new.reason,
                **extra,
            },
            durable=True,
        )

    # -- reading -----------------------------------------------------------------

    def get(self, model: str) -> RouteState:
        """The live route of ``model`` (NotFoundError if it has none)."""
        from conveyor.serving.tables import RouteRecord

        with self.store.read() as session:
            row = session.get(RouteRecord, model)
            if row is None:
                raise NotFoundError(f"model {model!r} has no route", model=model)
            return _state(row)

    def all(self) -> list[RouteState]:
        """Every live route, by model name."""
        import sqlalchemy as sa

        from conveyor.serving.tables import RouteRecord

        with self.store.read() as session:
            rows = session.scalars(sa.select(RouteRecord).order_by(RouteRecord.model))
            return [_state(r) for r in rows]

    def revisions(self) -> dict[str, int]:
        """``{model: revision}`` of every live route: one small SELECT, what servers poll."""
        import sqlalchemy as sa

        from conveyor.serving.tables import RouteRecord

        with self.store.read() as session:
            rows = session.execute(sa.select(RouteRecord.model, RouteRecord.revision))
            return {model: revision for model, revision in rows}

    def history(self, model: str, limit: int = 50) -> list[RouteState]:
        """The route's revisions, newest first (including revisions before a delete)."""
        import sqlalchemy as sa

        from conveyor.serving.tables import RouteHistoryRecord as H
        from conveyor.store.paging import check_limit

        check_limit(limit)
        with self.store.read() as session:
            rows = session.scalars(
                sa.select(H).where(H.model == model).order_by(H.revision.desc()).limit(limit)
            )
            return [
                RouteState(
                    r.model, r.revision, RoutePolicy.from_dict(r.policy), r.actor, r.reason, r.at
                )
                for r in rows
            ]

    def _history_entry(self, model: str, revision: int) -> RouteState | None:
        import sqlalchemy as sa

        from conveyor.serving.tables import RouteHistoryRecord as H

        with self.store.read() as session:
            r = session.scalars(
                sa.select(H).where(H.model == model, H.revision == revision)
            ).first()
            if r is None:
                return None
            return RouteState(
                r.model, r.revision, RoutePolicy.from_dict(r.policy), r.actor, r.reason, r.at
            )


def _state(row: RouteRecord) -> RouteState:
    return RouteState(
        row.model,
        row.revision,
        RoutePolicy.from_dict(row.policy),
        row.actor,
        row.reason,
        row.updated_at,
    )


def _check_expected(expected: int | None) -> None:
    if expected is not None and (
        not isinstance(expected, int) or isinstance(expected, bool) or expected < 0
    ):
        raise InvalidInputError(
            f"expected_revision must be a revision number (0: no route yet), got {expected!r}",
            field="expected_revision",
        )
