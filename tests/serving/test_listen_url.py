"""``serving.listen_url``: the route watcher LISTENs where it says, not on the store's URL (a
transaction-mode pooler such as PgBouncer cannot hold a LISTEN). Here the store is the real
PostgreSQL through one proxy (the pooler's place) and the listen URL the same database
through another: route changes written through the store path are pushed through the
listen path, and cutting the listen path cuts the pushes, not the store."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from serving_support import linear_project

from conveyor.backends import BackendURL
from conveyor.errors import ConfigError
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer
from conveyor.testing.services import POSTGRES_URL, postgres_schema, require
from conveyor.testing.tcp_proxy import TcpProxy
from conveyor.testing.wait import wait_until

ROW = {"records": [{"a": 1.0, "b": 2.0}]}


def _through(url: str, proxy: TcpProxy) -> str:
    return BackendURL.parse(url).with_(host="127.0.0.1", port=proxy.port).render(False)


def test_route_pushes_arrive_through_the_listen_url(tmp_path: Path) -> None:
    parsed = BackendURL.parse(POSTGRES_URL)
    host, port = parsed.host or "127.0.0.1", parsed.port or 5432
    require(host, port, "PostgreSQL")
    with (
        postgres_schema() as pg,
        TcpProxy(host, port) as store_path,
        TcpProxy(host, port) as listen_path,
    ):
        listen_url = _through(pg, listen_path)
        # Polling every 10 s (the longest): a change applied sooner came by a push.
        serving = f"{{auth: disabled, poll_interval_s: 10, listen_url: '{listen_url}'}}"
        project = linear_project(
            tmp_path,
            name="listen",
            serving=serving,
            scales=(1.0, 2.0),
            backends={"store": _through(pg, store_path)},
        )
        try:
            with ThreadedServer(create_app(project)) as server:
                watcher = server.app.state.server.watcher
                listener = watcher.listener
                assert listener is not None
                assert f":{listen_path.port}/" in listener.dsn
                assert f":{store_path.port}/" not in listener.dsn
                wait_until(lambda: listener.connected, message="the listener is connected")
                routes = RouteStore(project.store, project.events, project.registry)
                routes.set("m", RoutePolicy.fixed(2))
                wait_until(
                    lambda: watcher.revisions.get("m") == 2 and listener.notices >= 1,
                    message="the change is pushed through the listen URL",
                )
                answer = httpx.post(f"{server.url}/v1/models/m/predict", json=ROW, timeout=10)
                assert answer.json()["version"] == 2
                # The listen path cut: the listener loses its connection; the store path,
                # which serves the routes and keys, answers on.
                listen_path.refuse()
                wait_until(lambda: not listener.connected, message="the listener is cut")
                answer = httpx.post(f"{server.url}/v1/models/m/predict", json=ROW, timeout=10)
                assert answer.status_code == 200
                listen_path.restore()
                wait_until(lambda: listener.connected, message="the listener reconnects")
                routes.set("m", RoutePolicy.fixed(1))
                wait_until(
                    lambda: watcher.revisions.get("m") == 3,
                    message="pushes arrive again through the listen URL",
                )
        finally:
            project.close()


def test_listen_url_must_be_postgresql(tmp_path: Path) -> None:
    from conveyor.config import load_spec
    from conveyor.project import init_project

    init_project(tmp_path, name="listen-bad")
    with (tmp_path / "conveyor.yaml").open("a") as spec:
        spec.write("serving: {listen_url: 'redis://127.0.0.1:6379/0'}\n")
    with pytest.raises(ConfigError, match="not a PostgreSQL URL"):
        load_spec(tmp_path)
