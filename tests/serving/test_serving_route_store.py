"""RouteStore on real SQLite and PostgreSQL, with a real registry of scikit-learn models."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conveyor.artifacts.store import ArtifactStore
from conveyor.errors import ConcurrentUpdateError, InvalidInputError, NotFoundError
from conveyor.events.log import EventLog
from conveyor.registry import Registry
from conveyor.serving.route_store import RouteState, RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.store.database import MetadataStore


@pytest.fixture
def events(tmp_path: Path) -> Iterator[EventLog]:
    with EventLog.from_url(f"sqlite:///{tmp_path}/events.db") as log:
        yield log


@pytest.fixture
def routes(store_url: str, tmp_path: Path, events: EventLog) -> Iterator[RouteStore]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(int)
    with (
        MetadataStore.from_url(store_url) as store,
        ArtifactStore.from_url(f"file://{tmp_path}/artifacts") as artifacts,
    ):
        registry = Registry(store, artifacts, events)
        for c in (0.1, 1.0, 10.0, 100.0):  # fraud@1..4
            registry.register("fraud", LogisticRegression(C=c).fit(x, y))
        registry.register("churn", LogisticRegression().fit(x, y))  # churn@1
        yield RouteStore(store, events, registry)


def route_events(events: EventLog, kind: str) -> list[Any]:
    events.flush()
    return list(events.latest(50, kind=kind))  # oldest first


def test_set_get_history_and_revisions(routes: RouteStore, events: EventLog) -> None:
    first = routes.set("fraud", RoutePolicy.fixed(1), actor="ana", reason="first deploy")
    assert (first.model, first.revision, first.actor, first.reason) == (
        "fraud",
        1,
        "ana",
        "first deploy",
    )
    canary = RoutePolicy.canary(1, 2, 10, sticky_header="x-user-id", shadow=[3])
    second = routes.set("fraud", canary.to_dict(), actor="bo", expected_revision=1)
    assert second.revision == 2 and second.policy == canary
    assert routes.get("fraud") == second
    routes.set("churn", RoutePolicy.fixed(1))
    assert routes.revisions() == {"fraud": 2, "churn": 1}
    assert [s.model for s in routes.all()] == ["churn", "fraud"]
    history = routes.history("fraud")
    assert [(h.revision, h.policy, h.actor) for h in history] == [
        (2, canary, "bo"),
        (1, RoutePolicy.fixed(1), "ana"),
    ]
    assert [h.revision for h in routes.history("fraud", limit=1)] == [2]

    audit = route_events(events, "route.set")
    assert [(e.subject, e.actor, e.payload["revision"]) for e in audit] == [
        ("fraud", "ana", 1),
        ("fraud", "bo", 2),
        ("churn", None, 1),
    ]
    assert audit[0].payload["old"] is None
    assert audit[1].payload["old"] == RoutePolicy.fixed(1).to_dict()
    assert audit[1].payload["new"] == canary.to_dict()
    assert second.to_dict()["policy"] == canary.to_dict()


def test_every_version_a_policy_names_must_be_registered(routes: RouteStore) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (RoutePolicy.canary(1, 9, 10).to_dict(), "versions[1].version"),
        (RoutePolicy.fixed(1, shadow=[2, 7]).to_dict(), "shadow[1]"),
        (
            RoutePolicy.fixed(
                1,
                flags=[{"name": "beta", "version": 5}],  # type: ignore[list-item]
            ).to_dict(),
            "flags[0].version",
        ),
    ]
    for policy, field in cases:
        with pytest.raises(NotFoundError) as caught:
            routes.set("fraud", policy)
        assert caught.value.context["field"] == field
        assert field in caught.value.message and "not registered" in caught.value.message
    # churn has only version 1: fraud@2 exists, churn@2 does not.
    with pytest.raises(NotFoundError, match="churn@2"):
        routes.set("churn", RoutePolicy.fixed(2))
    with pytest.raises(NotFoundError):
        routes.set("ghost", RoutePolicy.fixed(1))
    assert routes.revisions() == {}
    with pytest.raises(InvalidInputError) as bad:
        routes.set("fraud", {"mode": "fixed", "versions": [{"version": 1, "weight": -1}]})
    assert bad.value.context["field"] == "versions[0].weight"
    with pytest.raises(InvalidInputError, match="model name"):
        routes.set("bad name!", RoutePolicy.fixed(1))


def test_expected_revision_refuses_a_stale_write(routes: RouteStore) -> None:
    with pytest.raises(ConcurrentUpdateError):
        routes.set("fraud", RoutePolicy.fixed(1), expected_revision=3)
    routes.set("fraud", RoutePolicy.fixed(1), expected_revision=0)  # 0: must not exist yet
    with pytest.raises(ConcurrentUpdateError):
        routes.set("fraud", RoutePolicy.fixed(2), expected_revision=0)
    with pytest.raises(InvalidInputError, match="expected_revision"):
        routes.set("fraud", RoutePolicy.fixed(2), expected_revision=-1)
    assert routes.get("fraud").policy == RoutePolicy.fixed(1)
    assert len(routes.history("fraud")) == 1


def test_rollback_writes_the_previous_policy_as_a_new_revision(
    routes: RouteStore, events: EventLog
) -> None:
    with pytest.raises(NotFoundError):
        routes.rollback("fraud", actor="ana")
    routes.set("fraud", RoutePolicy.fixed(1), actor="ana")
    with pytest.raises(InvalidInputError, match="no revision before 1"):
        routes.rollback("fraud", actor="ana")
    canary = RoutePolicy.canary(1, 2, 20)
    routes.set("fraud", canary, actor="ana")

    back = routes.rollback("fraud", actor="bo", reason="p99 up")
    assert back.revision == 3 and back.policy == RoutePolicy.fixed(1)
    assert back.reason == "rollback to revision 1: p99 up"
    assert routes.get("fraud") == back
    # Append-only: the rolled-back revision is still there; rolling back again undoes the undo.
    assert [h.revision for h in routes.history("fraud")] == [3, 2, 1]
    assert routes.rollback("fraud", actor="bo").policy == canary
    assert routes.revisions() == {"fraud": 4}

    audit = route_events(events, "route.rolled_back")
    assert [e.payload["restored_revision"] for e in audit] == [1, 2]
    assert audit[0].payload["old"] == canary.to_dict()
    assert audit[0].payload["new"] == RoutePolicy.fixed(1).to_dict()
    assert audit[0].actor == "bo"


def test_delete_keeps_the_history_and_a_new_route_continues_its_numbers(
    routes: RouteStore, events: EventLog
) -> None:
    routes.set("fraud", RoutePolicy.fixed(1))
    routes.set("fraud", RoutePolicy.fixed(2))
    removed = routes.delete("fraud", actor="ana", reason="retired")
    assert removed.revision == 2
    assert routes.revisions() == {}
    with pytest.raises(NotFoundError):
        routes.get("fraud")
    with pytest.raises(NotFoundError):
        routes.delete("fraud")
    again = routes.set("fraud", RoutePolicy.fixed(3), expected_revision=0)
    assert again.revision == 3
    assert [h.revision for h in routes.history("fraud")] == [3, 2, 1]
    (deleted,) = route_events(events, "route.deleted")
    assert deleted.payload["old"] == RoutePolicy.fixed(2).to_dict() and deleted.actor == "ana"


def _race(routes: RouteStore, policies: list[RoutePolicy], expected: int | None) -> list[object]:
    barrier = threading.Barrier(len(policies))
    outcomes: list[object] = [None] * len(policies)

    def write(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = routes.set(
                "fraud", policies[i], actor=f"w{i}", expected_revision=expected
            )
        except ConcurrentUpdateError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(policies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


@pytest.mark.parametrize("existing", [False, True], ids=["first-revision", "update"])
def test_concurrent_conditional_writes_let_exactly_one_win(
    routes: RouteStore, existing: bool
) -> None:
    read = 0
    if existing:
        read = routes.set("fraud", RoutePolicy.fixed(1)).revision
    outcomes = _race(routes, [RoutePolicy.fixed(2), RoutePolicy.fixed(3)], read)
    wins = [o for o in outcomes if isinstance(o, RouteState)]
    errors = [o for o in outcomes if isinstance(o, ConcurrentUpdateError)]
    assert len(wins) == 1 and len(errors) == 1, outcomes
    assert routes.get("fraud") == wins[0]
    assert wins[0].revision == read + 1
    assert len(routes.history("fraud")) == read + 1


@pytest.mark.parametrize("existing", [False, True], ids=["first-revision", "update"])
def test_concurrent_unconditional_writes_all_land_as_consecutive_revisions(
    routes: RouteStore, existing: bool
) -> None:
    start = 0
    if existing:
        start = routes.set("fraud", RoutePolicy.fixed(1)).revision
    policies = [RoutePolicy.fixed(v) for v in (1, 2, 3, 4, 2, 3)]
    outcomes = _race(routes, policies, None)
    assert all(isinstance(o, RouteState) for o in outcomes), outcomes
    revisions = sorted(o.revision for o in outcomes if isinstance(o, RouteState))
    assert revisions == list(range(start + 1, start + 7))
    history = routes.history("fraud")
    assert [h.revision for h in history] == list(range(start + 6, 0, -1))
    # Each writer's policy is in the history at the revision it was told.
    by_revision = {h.revision: (h.actor, h.policy) for h in history}
    for i, o in enumerate(outcomes):
        assert isinstance(o, RouteState)
        assert by_revision[o.revision] == (f"w{i}", policies[i])
    assert routes.get("fraud").revision == start + 6
