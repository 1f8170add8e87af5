"""PointerTable: a third kind of pointer (a collection alias, as RAG will have) on its own tables.

Model aliases and served routes are tested through the registry and the route
store; this checks the mechanism itself, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from conveyor.errors import ConcurrentUpdateError, InvalidInputError, NotFoundError
from conveyor.store.database import MetadataStore
from conveyor.store.models import VersionedMixin
from conveyor.store.pointers import Change, Key, PointerTable, Previous
from conveyor.store.types import UTCDateTime
from conveyor.testing.wait import later_than


class _Base(DeclarativeBase):
    """Not the store's Base: these tables are the test's, outside every migration chain."""

    type_annotation_map = {datetime: UTCDateTime()}


class CollectionAlias(VersionedMixin, _Base):
    __tablename__ = "test_collection_aliases"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    collection: Mapped[str] = mapped_column(sa.String(100))
    updated_at: Mapped[datetime]


class CollectionAliasHistory(_Base):
    __tablename__ = "test_collection_alias_history"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    name: Mapped[str] = mapped_column(sa.String(100))
    before: Mapped[str | None] = mapped_column(sa.String(100))
    after: Mapped[str] = mapped_column(sa.String(100))
    actor: Mapped[str | None] = mapped_column(sa.String(100))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[datetime]


class CollectionAliases(PointerTable[str]):
    key_columns = ("name",)

    def __init__(self, store: MetadataStore) -> None:
        super().__init__(store, CollectionAlias, CollectionAliasHistory)

    def resolve(self, session: Session, key: Key, value: Any) -> str:
        if not str(value).startswith("docs-"):
            raise InvalidInputError(f"no collection {value!r}", field="collection")
        return str(value)

    def value(self, head: CollectionAlias) -> str:
        return head.collection

    def write(
        self, session: Session, key: Key, head: CollectionAlias | None, change: Change[str]
    ) -> CollectionAlias:
        if head is None:
            head = CollectionAlias(name=key[0])
            session.add(head)
        head.collection, head.updated_at = change.after, change.at
        return head

    def record(self, head: CollectionAlias, change: Change[str]) -> CollectionAliasHistory:
        return CollectionAliasHistory(
            name=head.name,
            before=change.before,
            after=change.after,
            actor=change.actor,
            reason=change.reason,
            at=change.at,
        )

    def previous(self, session: Session, key: Key, head: CollectionAlias) -> Previous[str]:
        last = self.last(key, session)
        if last is None or last.before is None:
            raise InvalidInputError(f"{key[0]} has nothing to roll back to", field="name")
        return Previous(last.before, "rollback", last)


@pytest.fixture
def pointers(store_url: str) -> Iterator[CollectionAliases]:
    with MetadataStore.from_url(store_url) as store:
        _Base.metadata.create_all(store.engine)
        yield CollectionAliases(store)


def _history(pointers: CollectionAliases) -> list[tuple[str | None, str]]:
    return [(e.before, e.after) for e in pointers.entries(name="kb")]


def test_moves_rollback_time_travel_and_removal(pointers: CollectionAliases) -> None:
    key = ("kb",)
    with pytest.raises(NotFoundError, match="is not set"):
        pointers.get(key)
    first = pointers.move(key, "docs-1", actor="ana", reason="first index")
    assert first.before is None and first.head.collection == "docs-1"
    between = later_than(datetime.now(UTC))  # strictly after the first move's timestamp
    later_than(between)  # and the second move's strictly after it
    second = pointers.move(key, "docs-2", actor="bo")
    assert second.before is not None and second.before["collection"] == "docs-1"
    assert _history(pointers) == [("docs-1", "docs-2"), (None, "docs-1")]
    assert pointers.at(key, between).after == "docs-1"
    assert pointers.find(("other",)) is None

    moved, previous = pointers.rollback(key, actor="oncall", reason="bad chunks")
    assert previous.value == "docs-1" and moved.head.collection == "docs-1"
    assert moved.entry.reason == "rollback: bad chunks"
    assert _history(pointers)[0] == ("docs-2", "docs-1")

    with pytest.raises(InvalidInputError, match="no collection"):
        pointers.move(key, "elsewhere")  # resolve refuses it: nothing written
    assert len(_history(pointers)) == 3

    removed = pointers.remove(key)
    assert removed.collection == "docs-1"
    with pytest.raises(NotFoundError):
        pointers.rollback(key, actor="ana")
    assert len(_history(pointers)) == 3  # the history outlives the pointer


def test_conditional_moves_and_rollbacks_refuse_a_stale_read(pointers: CollectionAliases) -> None:
    key = ("kb",)
    pointers.move(key, "docs-1", expected=0)  # 0: must not exist yet
    with pytest.raises(ConcurrentUpdateError, match="is at 1, not 0"):
        pointers.move(key, "docs-2", expected=0)
    token = pointers.token(pointers.get(key))
    pointers.move(key, "docs-2", expected=token)
    with pytest.raises(ConcurrentUpdateError):
        pointers.move(key, "docs-3", expected=token)

    def meddle(_: Previous[str]) -> None:
        pointers.move(key, "docs-9")  # someone moves it while the rollback checks

    with pytest.raises(ConcurrentUpdateError):
        pointers.rollback(key, actor="ana", check=meddle)
    assert pointers.get(key).collection == "docs-9"


def test_racing_unconditional_moves_all_land_in_order(pointers: CollectionAliases) -> None:
    key = ("kb",)
    targets = [f"docs-{i}" for i in range(6)]
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def move(target: str) -> None:
        barrier.wait()
        try:
            pointers.move(key, target, actor=target)
        except BaseException as exc:  # shown by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=move, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    history = list(reversed(_history(pointers)))
    assert len(history) == 6 and history[0][0] is None
    # Each move starts where the previous one left the pointer: none was lost.
    for earlier, later in itertools.pairwise(history):
        assert later[0] == earlier[1]
    assert sorted(after for _, after in history) == targets
