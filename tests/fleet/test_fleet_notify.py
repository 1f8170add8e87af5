"""The route push itself, on the real PostgreSQL: a route written, rolled back or deleted is
announced on commit, to listeners of the same schema only; a write refused before its
commit announces nothing; SQLite writes route changes without any."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_support import fleet_project

from conveyor.errors import ConcurrentUpdateError
from conveyor.project import Project
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.watcher import RouteListener
from conveyor.testing.services import postgres_schema, redis_prefix
from conveyor.testing.wait import wait_until


class Heard:
    def __init__(self, dsn: str) -> None:
        self.notices: list[tuple[str | None, int | None]] = []
        self.listener = RouteListener(dsn, lambda m, r: self.notices.append((m, r)))

    def __enter__(self) -> Heard:
        self.listener.start()
        wait_until(lambda: self.listener.connected, message="the listener connects")
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.stop()

    def changes(self) -> list[tuple[str | None, int | None]]:
        return [n for n in self.notices if n[0] is not None]


@pytest.fixture
def two_projects(tmp_path: Path) -> Iterator[tuple[Project, Project]]:
    with (
        postgres_schema() as a,
        postgres_schema() as b,
        redis_prefix() as cache,
        redis_prefix() as limits,
    ):
        fleet_project(tmp_path / "a", store=a, cache=cache, ratelimit=limits)
        fleet_project(tmp_path / "b", store=b, cache=cache, ratelimit=limits)
        with Project.open(tmp_path / "a", env={}) as pa, Project.open(tmp_path / "b", env={}) as pb:
            yield pa, pb


def _dsn(project: Project) -> str:
    rendered: str = project.store.url.with_(driver=None).render(hide_password=False)
    return rendered


def test_changes_are_announced_to_their_schemas_listeners_only(
    two_projects: tuple[Project, Project],
) -> None:
    a, b = two_projects
    routes_a = RouteStore(a.store, a.events, a.registry)
    routes_b = RouteStore(b.store, b.events, b.registry)
    with Heard(_dsn(a)) as heard:
        assert heard.notices == [(None, None)]  # connected: poll once, notices may be missed
        routes_b.set("m", RoutePolicy.fixed(2))  # another schema, same database and channel
        routes_a.set("m", RoutePolicy.fixed(2))  # revision 2 (the project set revision 1)
        routes_a.rollback("m", actor="test")  # revision 3
        with pytest.raises(ConcurrentUpdateError):  # refused before any write: no notice
            routes_a.set("m", RoutePolicy.fixed(1), expected_revision=1)
        routes_a.delete("m", actor="test")
        wait_until(lambda: len(heard.changes()) >= 3, message="three notices")
        time.sleep(0.3)  # nothing else arrives
        assert heard.changes() == [("m", 2), ("m", 3), ("m", None)]
        assert heard.listener.notices == 3


def test_a_listener_reconnects_and_says_so(two_projects: tuple[Project, Project]) -> None:
    import psycopg

    a, _ = two_projects
    with Heard(_dsn(a)) as heard, psycopg.connect(_dsn(a), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"conveyor-routes:{os.getpid()}",),
        )
        wait_until(lambda: heard.listener.connections >= 2, message="the listener is back")
        # Reconnected: it says notices may have been missed (the watcher polls once).
        assert heard.notices.count((None, None)) >= 2
        RouteStore(a.store, a.events, a.registry).set("m", RoutePolicy.fixed(2))
        wait_until(lambda: ("m", 2) in heard.changes(), message="pushed again")


def test_an_unreachable_database_is_retried_without_raising(tmp_path: Path) -> None:
    from conveyor.testing.ports import worker_port

    heard = Heard(f"postgresql://postgres@127.0.0.1:{worker_port()}/test")
    heard.listener.start()
    try:
        wait_until(lambda: heard.listener.last_error is not None, message="it tried")
        assert not heard.listener.connected
        assert "127.0.0.1" in (heard.listener.last_error or "")
    finally:
        heard.listener.stop()


def test_sqlite_route_changes_announce_nothing_and_fail_nothing(tmp_path: Path) -> None:
    from conveyor.project import init_project

    init_project(tmp_path, name="local")
    with Project.open(tmp_path, env={}) as project:
        import numpy as np
        import pandas as pd
        from sklearn.linear_model import LinearRegression

        X = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 2)), columns=["a", "b"])
        project.registry.register("m", LinearRegression().fit(X, X.sum(axis=1)), signature_from=X)
        routes = RouteStore(project.store, project.events, project.registry)
        assert routes.set("m", RoutePolicy.fixed(1)).revision == 1
        routes.delete("m")
