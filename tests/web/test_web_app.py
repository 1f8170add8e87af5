"""The shared HTTP layer: route matching, the pipeline every route passes, the generated
OpenAPI document, and a route a capability contributes, all on a real uvicorn, once per
backend set of the matrix (keys in each store, buckets in memory and on Redis)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import Response

from conveyor.backends import BackendURL
from conveyor.capability import Capability, register, unregister
from conveyor.errors import InvalidInputError
from conveyor.governance.keys import ApiKeys
from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer
from conveyor.testing.wait import wait_until
from conveyor.web.app import AppContext, Contribution
from conveyor.web.pipeline import Call
from conveyor.web.routing import Route, Router


async def _ok(call: Call) -> Response:
    return Response(b"{}", media_type="application/json")


def found_route(router: Router) -> Route | None:
    return router.match("POST", "/v1/models/other/predict").route


def test_router_matches_static_and_templated_paths_and_says_which_methods_exist() -> None:
    router = Router(
        [
            Route("GET", "/v1/models", _ok, None, "list"),
            Route("POST", "/v1/models/{model}/predict", _ok, None, "predict"),
            Route("GET", "/v1/models/{model}/route", _ok, None, "show"),
            Route("PUT", "/v1/models/{model}/route", _ok, None, "set"),
            Route("GET", "/v2/models/{model}/versions/{version}", _ok, None, "meta"),
        ]
    )
    found = router.match("POST", "/v1/models/fraud/predict")
    assert found.route is not None and found.route.summary == "predict"
    assert found.params == {"model": "fraud"}
    found = router.match("GET", "/v2/models/m/versions/7")
    assert found.route is not None and found.params == {"model": "m", "version": "7"}
    assert router.match("HEAD", "/v1/models").route is not None  # HEAD falls back to GET
    wrong = router.match("DELETE", "/v1/models/fraud/route")
    assert wrong.route is None and wrong.allowed == ("GET", "PUT")
    # A parameter is one non-empty segment: a decoded %2F adds a segment and matches nothing.
    assert router.match("POST", "/v1/models/a/b/predict").route is None
    assert router.match("POST", "/v1/models//predict").route is None
    # A path seen before is answered from memory, each time with its own params.
    first = router.match("POST", "/v1/models/fraud/predict")
    first.params["model"] = "changed by a handler"
    again = router.match("POST", "/v1/models/fraud/predict")
    assert again.route is found_route(router) and again.params == {"model": "fraud"}
    for n in range(5000):  # many distinct paths: memory stays bounded and answers stay right
        assert router.match("GET", f"/v1/models/m{n}/route").params == {"model": f"m{n}"}
    assert len(router._seen) <= 4096
    with pytest.raises(InvalidInputError, match="two routes for GET /v1/models"):
        Router(
            [Route("GET", "/v1/models", _ok, None, "a"), Route("GET", "/v1/models", _ok, None, "b")]
        )


# -- a capability that plugs in a route ------------------------------------------------------


def _notes_routes(context: AppContext) -> Contribution:
    said: list[str] = []

    async def add(call: Call) -> Response:
        said.append((await call.body()).decode())
        return Response(
            f'{{"notes": {len(said)}, "by": "{call.actor}"}}', 201, media_type="application/json"
        )

    return Contribution(
        [Route("POST", "/v1/notes", add, "notes.write", "Add a note", body={"type": "string"})]
    )


NOTES = Capability(
    "notes_web_test",
    routes=f"{__name__}:_notes_routes",
    actions={"notes.write": "deployer"},
)


@pytest.fixture
def project(tmp_path: Path, backend_set: dict[str, str]) -> Iterator[Project]:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    register(NOTES)
    init_project(tmp_path, name="web")
    with (tmp_path / "conveyor.yaml").open("a") as f:
        f.write("serving: {max_body_bytes: 4096, poll_interval_s: 0.2}\n")
    try:
        with Project.open(tmp_path, env=backend_set) as proj:
            X = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 2)), columns=["a", "b"])
            proj.registry.register("m", LinearRegression().fit(X, X.sum(axis=1)), signature_from=X)
            RouteStore(proj.store, proj.events, proj.registry).set("m", RoutePolicy.fixed(1))
            yield proj
    finally:
        unregister(NOTES.name)


@pytest.fixture
def server(project: Project) -> Iterator[ThreadedServer]:
    running = ThreadedServer(create_app(project))
    running.start()
    yield running
    running.stop()


def _keys(project: Project) -> dict[str, str]:
    keys = ApiKeys(project.store, project.events)
    tokens = {}
    for role in ("viewer", "predictor", "deployer"):
        tokens[role], _ = keys.create(role, role)
    limited, _ = keys.create("limited", "deployer", rate_per_second=0.001, burst=1)
    tokens["limited"] = limited
    return tokens


def test_every_route_passes_the_pipeline_the_hot_path_included(
    project: Project, server: ThreadedServer
) -> None:
    tokens = _keys(project)
    url = server.url
    calls = [
        ("POST", "/v1/models/m/predict", {"records": [{"a": 1.0, "b": 2.0}]}, "predictor"),
        (
            "POST",
            "/v2/models/m/infer",
            {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]},
            "predictor",
        ),
        ("GET", "/v1/models", None, "viewer"),
        ("GET", "/v1/models/m/route", None, "viewer"),
        ("GET", "/metrics", None, "viewer"),
        ("POST", "/v1/notes", "a note", "deployer"),  # the plugged-in capability's route
    ]
    for method, path, body, role in calls:
        kwargs: dict[str, Any] = {"json": body} if not isinstance(body, str) else {"content": body}
        # Authentication: no key is refused on every route, the right role passes.
        refused = httpx.request(method, url + path, timeout=10, **kwargs)
        assert refused.status_code == 401, (path, refused.text)
        assert refused.json()["code"] == "unauthenticated"
        assert len(refused.headers["x-request-id"]) == 32  # every answer carries one
        ok = httpx.request(
            method,
            url + path,
            headers={"authorization": f"Bearer {tokens[role]}", "x-request-id": f"r-{path}"},
            timeout=10,
            **kwargs,
        )
        assert ok.status_code in (200, 201), (path, ok.text)
        assert ok.headers["x-request-id"] == f"r-{path}"
        # Rate limits: the limited key's one token is spent by the first call on any route.
        limited = {"authorization": f"Bearer {tokens['limited']}"}
        httpx.request(method, url + path, headers=limited, timeout=10, **kwargs)
        throttled = httpx.request(method, url + path, headers=limited, timeout=10, **kwargs)
        assert throttled.status_code == 429, (path, throttled.text)
        assert throttled.json()["code"] == "rate_limited" and "retry-after" in throttled.headers
    # The actor recorded by a plugged-in route is the same name as everywhere else.
    note = httpx.post(
        url + "/v1/notes", content="x", headers={"x-api-key": tokens["deployer"]}, timeout=10
    )
    assert note.json()["by"] == "key:deployer"
    # A viewer may not write a note: the capability's declared action decides.
    denied = httpx.post(
        url + "/v1/notes", content="x", headers={"x-api-key": tokens["viewer"]}, timeout=10
    )
    assert denied.status_code == 403 and denied.json()["required_role"] == "deployer"
    # Input limits apply to every route with a body.
    big = httpx.post(
        url + "/v1/notes", content="x" * 5000, headers={"x-api-key": tokens["deployer"]}, timeout=10
    )
    assert big.status_code == 413 and big.json()["code"] == "payload_too_large"
    # Probes stay open.
    assert httpx.get(url + "/v2/health/live", timeout=10).status_code == 200


def test_a_chunked_body_is_read_whole_and_held_to_the_limit(
    project: Project, server: ThreadedServer
) -> None:
    """No Content-Length: the body arrives in pieces and is counted as it is read."""
    url = server.url + "/v1/models/m/predict"
    key = {"x-api-key": _keys(project)["predictor"]}

    def pieces(body: bytes, size: int) -> Iterator[bytes]:
        for start in range(0, len(body), size):
            yield body[start : start + size]

    wait_until(
        lambda: httpx.post(url, json={"records": []}, headers=key, timeout=10).status_code != 404,
        message="the route reaches the worker",
    )
    good = b'{"records": [{"a": 1.0, "b": 2.0}, {"a": 0.5, "b": 0.5}]}'
    answer = httpx.post(url, content=pieces(good, 7), headers=key, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == pytest.approx([3.0, 1.0])
    big = b'{"records": [' + b'{"a": 1.0, "b": 2.0},' * 300 + b'{"a": 1.0, "b": 2.0}]}'
    refused = httpx.post(url, content=pieces(big, 1000), headers=key, timeout=10)
    assert refused.status_code == 413 and refused.json()["code"] == "payload_too_large"


def test_unknown_paths_and_methods_answer_json(server: ThreadedServer) -> None:
    missing = httpx.get(server.url + "/nowhere", timeout=10)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert missing.headers["content-type"] == "application/json"
    wrong = httpx.delete(server.url + "/v1/models", timeout=10)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    assert wrong.json() == {
        "code": "method_not_allowed",
        "message": "DELETE is not allowed on /v1/models; allowed: GET",
        "allowed": ["GET"],
        "request_id": wrong.headers["x-request-id"],
    }
    traversal = httpx.get(server.url + "/v2/models/..%2F..%2Fetc/ready", timeout=10)
    assert traversal.status_code == 404 and traversal.json()["code"] == "not_found"


def test_the_openapi_document_is_the_route_table(server: ThreadedServer) -> None:
    app = server.app
    document = httpx.get(server.url + "/openapi.json", timeout=10).json()
    published = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    served = {(r.method, r.path) for r in app.routes}
    assert published == served
    assert ("POST", "/v1/notes") in published  # a plugged-in capability's route is described
    predict = document["paths"]["/v1/models/{model}/predict"]["post"]
    assert predict["parameters"][0]["name"] == "model"
    assert {"401", "403", "413", "422", "429"} <= set(predict["responses"])
    assert document["paths"]["/v2/health/live"]["get"]["security"] == []


def test_the_event_loop_never_waits_on_the_store(tmp_path: Path, pg_url: str) -> None:
    """A key the server has not seen is read from PostgreSQL in a thread: while that read is
    blocked by a lock, the same worker keeps answering other requests. (About PostgreSQL's
    locks, so on PostgreSQL only.)"""
    import psycopg

    init_project(tmp_path, name="loop")
    with Project.open(tmp_path, env={"CONVEYOR_STORE": pg_url}) as proj:
        token, _ = ApiKeys(proj.store, proj.events).create("reader", "viewer")
        running = ThreadedServer(create_app(proj))
        running.start()
        try:
            url = BackendURL.parse(pg_url)
            schema = url.query["options"].split("search_path=", 1)[1]
            dsn = url.with_(query={}).render(hide_password=False)
            with psycopg.connect(dsn) as blocker, psycopg.connect(dsn, autocommit=True) as watch:
                blocker.execute(f'SET search_path TO "{schema}"')
                blocker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
                answer: list[httpx.Response] = []
                waiting = threading.Thread(
                    target=lambda: answer.append(
                        httpx.get(
                            running.url + "/v1/models",
                            headers={"x-api-key": token},
                            timeout=30,
                        )
                    )
                )
                waiting.start()
                wait_until(
                    lambda: watch.execute(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted"
                    ).fetchone()[0],  # type: ignore[index]
                    timeout=10,
                    message="the key lookup to wait on the lock",
                )
                assert not answer, "the key lookup should be waiting on the lock"
                started = time.perf_counter()
                live = httpx.get(running.url + "/v2/health/live", timeout=5)
                assert live.status_code == 200 and time.perf_counter() - started < 1.0
                blocker.rollback()  # release: the waiting request goes on
            waiting.join(30)
            assert answer and answer[0].status_code == 200, answer
        finally:
            running.stop()
