"""The gateway's stored routes on SQLite and PostgreSQL: the migrated tables are the
models' (schema_diff empty); revisions are never reused, a delete included; a change
conditional on a stale revision is refused; concurrent writers each land once in the
history; a rollback restores the route before; the spec's deployments and aliases are
checked; every change is an audit event with the route it replaced."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import ConcurrentUpdateError, InvalidInputError, NotFoundError
from conveyor.events.log import EventLog
from conveyor.gateway.routes_store import LlmRoutes, with_routes
from conveyor.gateway.settings import GatewaySpec
from conveyor.store.database import MetadataStore

SPEC = GatewaySpec.model_validate(
    {
        "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
        "deployments": {n: {"provider": "p", "model": n} for n in ("a", "b", "c")},
        "models": {"fast": ["a"], "smart": ["b", "c"]},
    }
)


@pytest.fixture
def store(store_url: str) -> Iterator[MetadataStore]:
    with MetadataStore.from_url(store_url) as found:
        assert found.schema_diff() == []  # migration 0004 is the tables' models
        yield found


def test_revisions_history_and_rollback(store: MetadataStore) -> None:
    routes = LlmRoutes(store)
    first = routes.set(SPEC, "chat", ["a"], actor="ana")
    assert first["revision"] == 1 and first["rules"] == [] and first["actor"] == "ana"
    rules = [{"name": "hard", "when": {"complexity": "complex"}, "to": "smart"}]
    second = routes.set(SPEC, "chat", ["a", "b"], {"a": 2}, rules, reason="complex to smart")
    assert second["revision"] == 2 and second["rules"] == rules
    assert routes.get("chat")["weights"] == {"a": 2.0}
    back = routes.rollback("chat", actor="ben")
    assert back["revision"] == 3 and back["deployments"] == ["a"] and back["rules"] == []
    assert back["reason"] == "rollback to revision 1" and back["actor"] == "ben"
    routes.delete("chat")
    with pytest.raises(NotFoundError):
        routes.get("chat")
    again = routes.set(SPEC, "chat", ["c"])
    assert again["revision"] == 4  # numbering goes on after a delete
    history = routes.history("chat")
    assert [h["revision"] for h in history] == [4, 3, 2, 1]
    assert history[2]["reason"] == "complex to smart" and history[2]["rules"] == rules
    spec = with_routes(SPEC, routes.all())
    assert spec.models["chat"].deployments == ["c"] and spec.models["fast"].deployments == ["a"]


def test_a_change_on_a_stale_revision_is_refused(store: MetadataStore) -> None:
    routes = LlmRoutes(store)
    routes.set(SPEC, "fast", ["b"], expected=0)
    with pytest.raises(ConcurrentUpdateError, match="is at 1, not 0"):
        routes.set(SPEC, "fast", ["c"], expected=0)
    routes.set(SPEC, "fast", ["c"], expected=1)
    assert routes.get("fast")["deployments"] == ["c"]
    routes.set(SPEC, "other", ["a"])
    with pytest.raises(InvalidInputError, match="no earlier revision"):
        routes.rollback("other")


def test_concurrent_writers_each_land_once(store: MetadataStore) -> None:
    routes = LlmRoutes(store)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            routes.set(SPEC, "busy", ["a", "b", "c"][i % 3 : i % 3 + 1], reason=f"w{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    history = routes.history("busy")
    assert sorted(h["revision"] for h in history) == [1, 2, 3, 4, 5, 6]
    assert sorted(h["reason"] for h in history) == [f"w{i}" for i in range(6)]
    assert routes.get("busy")["revision"] == 6


@pytest.mark.parametrize(
    ("alias", "deployments", "rules", "error"),
    [
        ("a", ["b"], [], "is a deployment's name"),
        ("x", ["nope"], [], "no deployment 'nope'"),
        ("x", ["a"], [{"when": {}, "to": "x"}], "sends to the alias itself"),
        ("x", ["a"], [{"when": {}, "to": "nowhere"}], "'nowhere', not an alias"),
        ("x", ["a"], [{"when": {"teams": "ops"}, "to": "fast"}], "rules.0.when.teams"),
        ("x", ["a", "a"], [], "listed twice"),
        ("bad name!", ["a"], [], "use 1 to 128"),
    ],
)
def test_a_bad_route_is_refused_naming_what_is_wrong(
    store: MetadataStore,
    alias: str,
    deployments: list[str],
    rules: list[dict[str, Any]],
    error: str,
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        LlmRoutes(store).set(SPEC, alias, deployments, None, rules)
    assert error in caught.value.message
    assert LlmRoutes(store).all() == {}


def test_a_rule_may_send_to_a_stored_alias(store: MetadataStore) -> None:
    routes = LlmRoutes(store)
    routes.set(SPEC, "cheap", ["c"])
    routes.set(SPEC, "chat", ["a"], None, [{"when": {"tiers": ["free"]}, "to": "cheap"}])
    spec = with_routes(SPEC, routes.all())
    assert spec.models["chat"].rules[0].to == "cheap"


def test_every_change_is_audited_with_the_route_it_replaced(
    store: MetadataStore, tmp_path: Path
) -> None:
    with EventLog.from_url(f"sqlite:///{tmp_path}/events.db") as events:
        routes = LlmRoutes(store, events)
        routes.set(SPEC, "fast", ["b"], actor="ana", reason="b is cheaper")
        routes.set(SPEC, "fast", ["c"], actor="ben")
        routes.rollback("fast", actor="cy")
        routes.delete("fast", actor="dee")
        events.flush()
        sets = events.query(kind="llm.route_set", subject="fast").items
        assert [e.actor for e in sets] == ["ana", "ben", "cy"]
        first, second, third = (e.payload for e in sets)
        assert first["previous"] is None and first["reason"] == "b is cheaper"
        assert second["previous"]["deployments"] == ["b"] and second["revision"] == 2
        assert third["deployments"] == ["b"] and third["previous"]["deployments"] == ["c"]
        (deleted,) = events.query(kind="llm.route_deleted", subject="fast").items
        assert deleted.actor == "dee" and deleted.payload["previous"]["revision"] == 3
