"""The runs table's parent, heartbeat and attempt: what the runner and recovery stand on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from pipeline_support import Backends

from conveyor.errors import ConcurrentUpdateError, ConflictError, InvalidInputError, NotFoundError
from conveyor.store.models import RunRecord
from conveyor.testing.wait import wait_until


def test_parent_attempt_heartbeat_children_and_stale(backends: Backends) -> None:
    runs = backends.store.runs
    parent = runs.start("pipeline", "nightly")
    assert (parent.parent_id, parent.attempt, parent.heartbeat_at) == (None, 1, None)
    first = runs.start("step", "extract", parent_id=parent.id)
    second = runs.start("step", "extract", parent_id=parent.id, attempt=2)
    other = runs.start("pipeline", "other")
    assert (second.parent_id, second.attempt) == (parent.id, 2)
    assert [r.id for r in runs.children(parent.id)] == [first.id, second.id]
    assert runs.children(other.id) == []
    assert runs.children_of([parent.id, other.id]) == {parent.id: [first, second]}

    beat = runs.heartbeat(parent.id)
    assert beat.heartbeat_at is not None and beat.heartbeat_at >= parent.started_at
    assert beat.version == parent.version + 1  # a recoverer holding the old version loses
    assert beat.to_dict()["heartbeat_at"] == beat.heartbeat_at.isoformat()
    with pytest.raises(ConcurrentUpdateError):
        runs.update(parent.id, expected_version=parent.version, status="failed")

    # Nothing is stale against a generous threshold; everything running is against zero.
    assert runs.stale(older_than=timedelta(hours=1)) == []
    everything = {parent.id, first.id, second.id, other.id}
    wait_until(  # the clock has moved past the last heartbeat
        lambda: {r.id for r in runs.stale(older_than=timedelta(0))} == everything,
        message="every running run to be stale against a zero threshold",
    )
    assert {r.id for r in runs.stale(older_than=timedelta(0), kind="step")} == {
        first.id,
        second.id,
    }
    runs.finish(first.id, "failed", error="boom")
    assert first.id not in {r.id for r in runs.stale(older_than=timedelta(0))}
    with pytest.raises(ConflictError, match="not running"):
        runs.heartbeat(first.id)


def test_stale_uses_the_heartbeat_when_there_is_one(backends: Backends) -> None:
    runs = backends.store.runs
    old = runs.start("pipeline", "old")
    fresh = runs.start("pipeline", "fresh")
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with backends.store.session() as session:
        session.execute(
            sa.update(RunRecord)
            .where(RunRecord.id.in_([old.id, fresh.id]))
            .values(started_at=hour_ago)
        )
    runs.heartbeat(fresh.id)  # started long ago, but alive now
    assert [r.id for r in runs.stale(older_than=timedelta(minutes=5))] == [old.id]


def test_list_filters_by_name(backends: Backends) -> None:
    runs = backends.store.runs
    a = runs.start("pipeline", "a")
    runs.start("pipeline", "b")
    assert [r.id for r in runs.list(kind="pipeline", name="a").items] == [a.id]


def test_bad_parent_attempt_and_threshold_are_refused(backends: Backends) -> None:
    runs = backends.store.runs
    with pytest.raises(NotFoundError, match="no run with id 'nope' to be the parent"):
        runs.start("step", "x", parent_id="nope")
    for attempt in (0, -1, 1.0, True):
        with pytest.raises(InvalidInputError, match="attempt must be an integer >= 1"):
            runs.start("step", "x", attempt=attempt)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="older_than"):
        runs.stale(older_than=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="not one string"):
        runs.children_of("abc")
    assert runs.list().items == []  # nothing was written by the refused calls
