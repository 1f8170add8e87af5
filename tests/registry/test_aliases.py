"""Aliases: moves with history, time travel, rollback, and concurrent moves that lose nothing."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime

import pytest
from registry_support import Doubler

from conveyor.errors import ConcurrentUpdateError, InvalidInputError, NotFoundError
from conveyor.registry import Registry
from conveyor.testing.wait import later_than


def _three(registry: Registry) -> list[str]:
    return [registry.register("fraud", Doubler(float(i))).id for i in range(3)]


def _tick() -> datetime:
    """A moment strictly after every move so far and strictly before the next one (moves
    are ordered by their timestamps; on a coarse clock two could share a reading)."""
    now = later_than(datetime.now(UTC))
    later_than(now)
    return now


def test_moves_are_recorded_with_who_when_and_why(registry: Registry) -> None:
    v1, v2, v3 = _three(registry)
    before = _tick()
    registry.set_alias("fraud", "stable", 1, actor="ana", reason="first")
    after_first = _tick()
    registry.set_alias("fraud", "stable", "fraud@2", actor="bo", reason="better auc")
    after_second = _tick()
    registry.set_alias("fraud", "challenger", v3, actor="bo")
    registry.set_alias("fraud", "stable", v3, actor="cy", reason="hotfix", forced=True)

    assert registry.resolve("fraud@stable").id == v3
    assert registry.aliases("fraud") == {"challenger": 3, "stable": 3}
    history = registry.alias_history("fraud", "stable")
    assert [(m.from_version_id, m.to_version_id) for m in history] == [
        (v2, v3),
        (v1, v2),
        (None, v1),
    ]
    assert [(m.actor, m.reason, m.forced) for m in history] == [
        ("cy", "hotfix", True),
        ("bo", "better auc", False),
        ("ana", "first", False),
    ]
    assert len(registry.alias_history("fraud")) == 4
    assert registry.alias_at("fraud", "stable", before) is None
    assert registry.alias_at("fraud", "stable", after_first).id == v1  # type: ignore[union-attr]
    assert registry.alias_at("fraud", "stable", after_second).id == v2  # type: ignore[union-attr]
    assert registry.alias_at("fraud", "stable", datetime.now(UTC)).id == v3  # type: ignore[union-attr]
    events = registry.events.latest(10, kind="model.alias_moved")  # type: ignore[union-attr]
    assert len(events) == 4 and events[-1].payload["forced"] is True


def test_bad_moves_are_refused_and_change_nothing(registry: Registry) -> None:
    _three(registry)
    other = registry.register("churn", Doubler())
    registry.set_alias("fraud", "stable", 1, actor="ana")
    with pytest.raises(InvalidInputError, match="reason"):
        registry.set_alias("fraud", "stable", 2, actor="ana", forced=True)
    with pytest.raises(InvalidInputError, match="belongs to model 'churn'"):
        registry.set_alias("fraud", "stable", other.id, actor="ana")
    with pytest.raises(NotFoundError, match="no version 9"):
        registry.set_alias("fraud", "stable", 9, actor="ana")
    for bad in ("latest", "7", "has space", ""):
        with pytest.raises(InvalidInputError) as err:
            registry.set_alias("fraud", bad, 2, actor="ana")
        assert err.value.context["field"] == "alias"
    assert registry.get("fraud", "stable").number == 1
    assert len(registry.alias_history("fraud")) == 1


def test_rollback_returns_to_the_previous_holder_and_is_recorded(registry: Registry) -> None:
    v1, v2, _ = _three(registry)
    registry.set_alias("fraud", "stable", 1, actor="ana")
    with pytest.raises(InvalidInputError, match="no previous version"):
        registry.rollback("fraud", "stable", actor="ana")
    registry.set_alias("fraud", "stable", 2, actor="ana")
    move = registry.rollback("fraud", "stable", actor="oncall", reason="p95 regression")
    assert (move.from_version_id, move.to_version_id) == (v2, v1)
    assert move.reason == "rollback: p95 regression" and move.actor == "oncall"
    assert registry.get("fraud", "stable").id == v1
    assert registry.alias_history("fraud", "stable")[0] == move
    event = registry.events.latest(1, kind="model.alias_moved")[0]  # type: ignore[union-attr]
    assert event.payload["rollback"] is True
    with pytest.raises(NotFoundError):
        registry.rollback("fraud", "nobody", actor="ana")


def test_expected_version_refuses_a_stale_move(registry: Registry) -> None:
    _three(registry)
    first = registry.set_alias("fraud", "stable", 1, actor="ana", expected_version=0)
    alias = registry.get_alias("fraud", "stable")
    assert alias.number == 1 and alias.version_id == first.to_version_id
    with pytest.raises(ConcurrentUpdateError):
        registry.set_alias("fraud", "stable", 2, actor="bo", expected_version=0)
    registry.set_alias("fraud", "stable", 2, actor="bo", expected_version=alias.version)
    with pytest.raises(ConcurrentUpdateError):
        registry.set_alias("fraud", "stable", 3, actor="cy", expected_version=alias.version)
    assert registry.get("fraud", "stable").number == 2


def _race(registry: Registry, targets: list[int], expected: int | None) -> list[object]:
    barrier = threading.Barrier(len(targets))
    outcomes: list[object] = [None] * len(targets)

    def move(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = registry.set_alias(
                "fraud", "stable", targets[i], actor=f"w{i}", expected_version=expected
            )
        except ConcurrentUpdateError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=move, args=(i,)) for i in range(len(targets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_concurrent_moves_from_the_same_read_let_exactly_one_win(registry: Registry) -> None:
    _three(registry)
    registry.set_alias("fraud", "stable", 1, actor="ana")
    read = registry.get_alias("fraud", "stable").version
    outcomes = _race(registry, [2, 3], read)
    errors = [o for o in outcomes if isinstance(o, ConcurrentUpdateError)]
    wins = [o for o in outcomes if not isinstance(o, ConcurrentUpdateError)]
    assert len(errors) == 1 and len(wins) == 1
    history = registry.alias_history("fraud", "stable")
    assert len(history) == 2 and history[0] == wins[0]
    assert registry.get("fraud", "stable").id == history[0].to_version_id


def test_concurrent_unconditional_moves_are_all_recorded(registry: Registry) -> None:
    _three(registry)
    outcomes = _race(registry, [1, 2, 3, 1, 2, 3], None)
    assert not any(isinstance(o, ConcurrentUpdateError) for o in outcomes)
    history = list(reversed(registry.alias_history("fraud", "stable")))
    assert len(history) == 6
    # Each move starts where the previous one left the alias: none was lost.
    assert history[0].from_version_id is None
    for earlier, later in itertools.pairwise(history):
        assert later.from_version_id == earlier.to_version_id
    assert registry.get("fraud", "stable").id == history[-1].to_version_id
