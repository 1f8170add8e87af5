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
consecutive revisions. The mechanism is the store's pointer with history
(:class:`conveyor.store.pointers.PointerTable`), shared with model aliases;
:class:`RoutePointers` says what a route holds (a policy document) and how
revisions are numbered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConcurrentUpdateError, InvalidInputError, NotFoundError
from conveyor.serving.events import ROUTE_DELETED, ROUTE_ROLLED_BACK, ROUTE_SET
from conveyor.serving.routes import RoutePolicy
from conveyor.store.pointers import Change, Key, PointerTable, Previous

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sqlalchemy.orm import Session

    from conveyor.capability import EventKind
    from conveyor.events.log import EventLog
    from conveyor.registry import Registry
    from conveyor.serving.tables import RouteHistoryRecord, RouteRecord
    from conveyor.store.database import MetadataStore

__all__ = ["ROUTES_CHANNEL", "RoutePointers", "RouteState", "RouteStore", "parse_notice"]

Document = dict[str, Any]

#: The PostgreSQL channel every route change is announced on (``NOTIFY`` in the transaction
#: that writes it, so a listener hears of it exactly when it is committed, and never of a
#: change rolled back). The payload is ``schema<TAB>model<TAB>revision`` (revision empty:
#: the route was deleted): channels are per database, so a listener keeps its schema's.
ROUTES_CHANNEL = "conveyor_routes"


def parse_notice(payload: str) -> tuple[str, str, int | None]:
    """``(schema, model, revision)`` of a :data:`ROUTES_CHANNEL` payload (revision None:
    deleted); ValueError when it is not one."""
    schema, model, revision = payload.split("\t")
    return schema, model, int(revision) if revision else None


def _announce(session: Session, model: str, revision: int | None) -> None:
    """``NOTIFY`` the route change in the session's transaction (PostgreSQL only; on
    SQLite servers poll)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    import sqlalchemy as sa

    session.execute(
        sa.text("SELECT pg_notify(:channel, current_schema() || :rest)"),
        {"channel": ROUTES_CHANNEL, "rest": f"\t{model}\t{'' if revision is None else revision}"},
    )


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


class RoutePointers(PointerTable[Document]):
    """Routes as pointers: ``model`` -> a policy document, in ``routes`` / ``route_history``.

    The concurrency token is the route's ``revision`` (1, 2, 3... per model,
    never reused: after a delete, numbering continues from the history).
    """

    key_columns = ("model",)
    newest_first = ("revision",)

    def __init__(self, store: MetadataStore) -> None:
        from conveyor.serving.tables import RouteHistoryRecord, RouteRecord

        super().__init__(store, RouteRecord, RouteHistoryRecord)

    def describe(self, key: Key) -> str:
        return f"the route of {key[0]!r}"

    def missing(self, key: Key) -> NotFoundError:
        return NotFoundError(f"model {key[0]!r} has no route", model=key[0])

    def stale(self, key: Key, current: int, expected: int) -> ConcurrentUpdateError:
        return ConcurrentUpdateError(
            f"the route of {key[0]!r} is at revision {current}, not {expected}: "
            "someone changed it since; read it again and retry",
            model=key[0],
            revision=current,
            expected_revision=expected,
        )

    def raced(self, key: Key, expected: int) -> ConcurrentUpdateError:
        return ConcurrentUpdateError(
            f"the route of {key[0]!r} was changed by someone else since revision "
            f"{expected} was read; read it again and retry",
            model=key[0],
            expected_revision=expected,
        )

    def token(self, head: RouteRecord) -> int:
        return head.revision

    def value(self, head: RouteRecord) -> Document:
        return head.policy

    def write(
        self, session: Session, key: Key, head: RouteRecord | None, change: Change[Document]
    ) -> RouteRecord:
        if head is None:
            import sqlalchemy as sa

            # After a delete the history remains: continue its numbering.
            last = session.scalar(
                sa.select(sa.func.max(self.history.revision)).where(self.history.model == key[0])
            )
            head = self.head(model=key[0], revision=(last or 0) + 1)
            session.add(head)
        else:
            head.revision += 1
        head.policy = change.after
        head.actor = change.actor
        head.reason = change.reason
        head.updated_at = change.at
        _announce(session, key[0], head.revision)
        return head

    def remove(self, key: Key) -> Any:
        """Delete the live route (its history stays) and announce it, in one transaction."""
        with self.store.session() as session:
            head = self._head(session, key)
            if head is None:
                raise self.missing(key)
            session.delete(head)
            _announce(session, key[0], None)
            return head

    def record(self, head: RouteRecord, change: Change[Document]) -> RouteHistoryRecord:
        entry: RouteHistoryRecord = self.history(
            model=head.model,
            revision=head.revision,
            policy=change.after,
            actor=change.actor,
            reason=change.reason,
            at=change.at,
        )
        return entry

    def previous(self, session: Session, key: Key, head: RouteRecord) -> Previous[Document]:
        import sqlalchemy as sa

        entry = session.scalars(
            sa.select(self.history).where(
                self.history.model == key[0], self.history.revision == head.revision - 1
            )
        ).first()
        if entry is None:
            raise InvalidInputError(
                f"the route of {key[0]!r} has no revision before {head.revision} to roll back to",
                field="model",
                model=key[0],
            )
        return Previous(entry.policy, f"rollback to revision {entry.revision}", entry)


class RouteStore:
    """Every model's live route policy, its history, and rollback.

    ``registry`` (optional) checks that every version a policy names is
    registered before it is stored; ``events`` (optional) receives a durable
    audit event per change (``route.set``, ``route.rolled_back``,
    ``route.deleted``) carrying the old and new policy.

    With a registry and ``verify`` (the default), :meth:`set` also loads every
    version the policy adds to the live route (its artifact's sha256 checked)
    and makes one warm-up prediction, before it commits: a version that cannot
    serve is refused with VersionRefusedError and its reason, so a tampered or
    broken version never reaches a server. (:meth:`rollback` restores a policy
    that was verified when it was set, and stays instant.) The model server
    passes ``verify=False`` and loads the versions into its own pool instead.
    """

    def __init__(
        self,
        store: MetadataStore,
        events: EventLog | None,
        registry: Registry | None = None,
        *,
        verify: bool = True,
    ) -> None:
        self.store = store
        self.events = events
        self.registry = registry
        self.verify = verify and registry is not None
        self._pointers = RoutePointers(store)

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
        self.check_versions(model, policy)
        if self.verify:
            self._verify_new_versions(model, policy)
        moved = self._pointers.move(
            (model,), policy.to_dict(), expected=expected_revision, actor=actor, reason=reason
        )
        old, new = _before(moved.before), _written(moved.head, policy)
        self._emit(ROUTE_SET, new, old=old)
        return new

    def rollback(self, model: str, *, actor: str | None, reason: str | None = None) -> RouteState:
        """Write the previous revision's policy as a new revision.

        NotFoundError when ``model`` has no route; InvalidInputError when
        its history holds no earlier revision. Rolling back twice returns
        to where the first rollback started (each rollback is a revision).
        """

        def registered(previous: Previous[Document]) -> None:
            self.check_versions(model, RoutePolicy.from_dict(previous.value))

        moved, previous = self._pointers.rollback(
            (model,), actor=actor, reason=reason, check=registered
        )
        old = _before(moved.before)
        new = _written(moved.head, RoutePolicy.from_dict(previous.value))
        self._emit(ROUTE_ROLLED_BACK, new, old=old, restored_revision=previous.entry.revision)
        return new

    def delete(
        self, model: str, *, actor: str | None = None, reason: str | None = None
    ) -> RouteState:
        """Remove ``model``'s route (undeploy); its history stays. Returns the removed state.

        A later :meth:`set` continues the revision numbers after the history's last.
        """
        removed = _state(self._pointers.remove((model,)))
        if self.events is not None:
            self.events.record(
                ROUTE_DELETED,
                subject=model,
                actor=actor,
                payload={
                    "revision": removed.revision,
                    "old": removed.policy.to_dict(),
                    "reason": reason,
                },
            )
        return removed

    def check_versions(self, model: str, policy: RoutePolicy) -> None:
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

    def new_versions(self, model: str, policy: RoutePolicy) -> list[int]:
        """The versions ``policy`` names that ``model``'s live route does not."""
        try:
            live = set(self.get(model).policy.all_versions())
        except NotFoundError:
            live = set()
        return [v for v in policy.all_versions() if v not in live]

    def _verify_new_versions(self, model: str, policy: RoutePolicy) -> None:
        from conveyor.serving.pool import verify_version

        assert self.registry is not None
        for number in self.new_versions(model, policy):
            verify_version(self.registry, model, number)

    def _emit(
        self, kind: EventKind, new: RouteState, *, old: RouteState | None, **extra: Any
    ) -> None:
        if self.events is None:
            return
        self.events.record(
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
        )

    # -- reading -----------------------------------------------------------------

    def get(self, model: str) -> RouteState:
        """The live route of ``model`` (NotFoundError if it has none)."""
        return _state(self._pointers.get((model,)))

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

    def health(self, state: RouteState) -> list[dict[str, Any]]:
        """The server workers that could not load ``state`` (the live revision), from their
        ``route.failed`` / ``route.applied`` events: one dict per worker still degraded,
        with the reason and the revision it serves instead. Empty: none reported."""
        from conveyor.serving.events import ROUTE_APPLIED, ROUTE_FAILED

        if self.events is None:
            return []
        last: dict[str, Any] = {}
        for event in self.events.iter(
            kind=[ROUTE_FAILED.name, ROUTE_APPLIED.name],
            subject=state.model,
            since=state.updated_at,
        ):
            last[event.payload["worker"]] = event
        return [
            {
                "worker": worker,
                "since": event.time.isoformat(),
                **{k: event.payload[k] for k in ("revision", "serving_revision", "reason")},
                "message": event.payload["message"],
            }
            for worker, event in sorted(last.items())
            if event.kind == ROUTE_FAILED.name and event.payload["revision"] == state.revision
        ]

    def history(self, model: str, limit: int = 50) -> list[RouteState]:
        """The route's revisions, newest first (including revisions before a delete)."""
        return [
            RouteState(
                r.model, r.revision, RoutePolicy.from_dict(r.policy), r.actor, r.reason, r.at
            )
            for r in self._pointers.entries(limit=limit, model=model)
        ]


def _state(row: RouteRecord) -> RouteState:
    return RouteState(
        row.model,
        row.revision,
        RoutePolicy.from_dict(row.policy),
        row.actor,
        row.reason,
        row.updated_at,
    )


def _before(columns: Mapping[str, Any] | None) -> RouteState | None:
    """The live route as it was before a write (None: there was none)."""
    if columns is None:
        return None
    return RouteState(
        columns["model"],
        columns["revision"],
        RoutePolicy.from_dict(columns["policy"]),
        columns["actor"],
        columns["reason"],
        columns["updated_at"],
    )


def _written(row: RouteRecord, policy: RoutePolicy) -> RouteState:
    """The live route just written, with the policy object the caller gave."""
    return RouteState(row.model, row.revision, policy, row.actor, row.reason, row.updated_at)


def _check_expected(expected: int | None) -> None:
    if expected is not None and (
        not isinstance(expected, int) or isinstance(expected, bool) or expected < 0
    ):
        raise InvalidInputError(
            f"expected_revision must be a revision number (0: no route yet), got {expected!r}",
            field="expected_revision",
        )
