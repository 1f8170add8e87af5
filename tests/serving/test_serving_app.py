"""The server end to end: real uvicorn on loopback, httpx and NVIDIA's tritonclient as clients.

Every test runs once per backend set of the matrix (``backend_set``: embedded; PostgreSQL
and Redis; PostgreSQL, Redis and NATS; SQLite and Redis Streams), so the route store, the
cache, the rate limiter and the event log are each exercised through the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer
from conveyor.testing import matrix
from conveyor.testing.wait import wait_until, wait_until_async

FEATURES = ["f0", "f1", "f2", "f3"]


def frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)


class Running(ThreadedServer):
    """The project's server, started: the tests keep the project beside it."""

    def __init__(self, project: Project, app: Any = None) -> None:
        super().__init__(app if app is not None else create_app(project))
        self.project = project
        self.start()


@pytest.fixture
def project(tmp_path: Path, backend_set: dict[str, str]) -> Iterator[Project]:
    from sklearn.linear_model import LinearRegression

    init_project(tmp_path, name="serve")
    with (tmp_path / "conveyor.yaml").open("a") as f:
        f.write("serving: {auth: disabled, max_body_bytes: 65536, poll_interval_s: 0.2}\n")
    with Project.open(tmp_path, env=backend_set) as proj:
        X = frame(200)
        for scale in (1.0, 2.0, 3.0):  # versions 1, 2, 3 predict 1x, 2x, 3x the row sum
            y = X.sum(axis=1) * scale
            proj.registry.register("sums", LinearRegression().fit(X, y), signature_from=X)
        routes = RouteStore(proj.store, proj.events, proj.registry)
        routes.set("sums", RoutePolicy.fixed(1), actor="test")
        yield proj


@pytest.fixture
def server(project: Project) -> Iterator[Running]:
    running = Running(project)
    yield running
    running.stop()


def predict(url: str, rows: pd.DataFrame, **kw: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/models/sums/predict", json={"records": rows.to_dict("records")}, **kw
    )


def _has_revision(listing: httpx.Response, model: str, revision: int) -> bool:
    models = listing.json()["models"]
    return any(m["name"] == model and m["revision"] == revision for m in models)


def wait_for_route(url: str, model: str, revision: int, timeout: float = 10) -> None:
    """Until the server applies ``model``'s route at ``revision`` (what ``GET /v1/models``
    shows is the worker's live route, swapped in once its versions are loaded)."""
    wait_until(
        lambda: _has_revision(httpx.get(f"{url}/v1/models", timeout=10), model, revision),
        timeout=timeout,
        interval=0.05,
        message=f"the route of {model} at revision {revision} to reach the server at {url}",
    )


def test_native_predict_answers_with_version_arm_and_request_id(server: Running) -> None:
    rows = frame(3, seed=1)
    response = predict(server.url, rows, headers={"x-request-id": "req-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert np.allclose(body["predictions"], rows.sum(axis=1), atol=1e-6)
    assert body["version"] == 1 and body["arm"] == "v1" and body["cached"] is False
    assert body["request_id"] == "req-1" and response.headers["x-request-id"] == "req-1"
    server.project.events.flush()
    events = server.project.events.query(kind="prediction", request_id="req-1").items
    assert len(events) == 1 and events[0].payload["rows"] == 3
    assert np.allclose(events[0].payload["output"], body["predictions"])


def test_bad_input_gets_a_stable_code_and_the_field(server: Running) -> None:
    url = f"{server.url}/v1/models/sums/predict"
    missing = httpx.post(url, json={"records": [{"f0": 1.0, "f1": 2.0, "f2": 3.0}]})
    assert missing.status_code == 422
    assert missing.json()["code"] == "invalid_input" and missing.json()["field"] == "f3"
    wrong_type = httpx.post(url, json={"records": [{"f0": "x", "f1": 2, "f2": 3, "f3": 4}]})
    assert wrong_type.status_code == 422 and wrong_type.json()["field"] == "f0"
    garbage = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert garbage.status_code == 400 and garbage.json()["code"] == "invalid_input"
    huge = httpx.post(url, content=b" " * 70000)
    assert huge.status_code == 413 and huge.json()["code"] == "payload_too_large"
    unknown = httpx.post(f"{server.url}/v1/models/nope/predict", json={"records": [{"a": 1}]})
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    no_version = predict(server.url, frame(1), params={"version": "9"})
    assert no_version.status_code == 404
    v2_bad = httpx.post(
        f"{server.url}/v2/models/sums/infer",
        content=b"\x00\x01garbage",
        headers={"Inference-Header-Content-Length": "4"},
    )
    assert v2_bad.status_code == 400 and v2_bad.json()["code"] == "invalid_input"


def test_tritonclient_health_metadata_and_infer_json_and_binary(server: Running) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("sums")
    meta = client.get_model_metadata("sums")
    assert meta["name"] == "sums" and [i["name"] for i in meta["inputs"]] == FEATURES
    assert client.get_server_metadata()["name"] == "conveyor"
    rows = frame(5, seed=2)
    expected = rows.sum(axis=1).to_numpy()
    for binary in (False, True):
        matrix = triton.InferInput("X", [5, 4], "FP64")
        matrix.set_data_from_numpy(rows.to_numpy(), binary_data=binary)
        out = triton.InferRequestedOutput("predict", binary_data=binary)
        result = client.infer("sums", [matrix], outputs=[out])
        assert np.allclose(result.as_numpy("predict"), expected, atol=1e-6)
    columns = []
    for name in FEATURES:
        column = triton.InferInput(name, [5], "FP64")
        column.set_data_from_numpy(rows[name].to_numpy(), binary_data=True)
        columns.append(column)
    result = client.infer("sums", columns, model_version="3")
    assert np.allclose(result.as_numpy("predict"), expected * 3, atol=1e-6)


def test_shadow_never_changes_the_response_and_both_outputs_are_logged(
    server: Running, project: Project
) -> None:
    rows = frame(2, seed=3)
    before = predict(server.url, rows).json()
    state = RouteStore(project.store, project.events, project.registry).set(
        "sums", RoutePolicy.fixed(1, shadow=[2]), actor="test"
    )
    wait_for_route(server.url, "sums", state.revision)
    for i in range(20):
        after = predict(server.url, rows, headers={"x-request-id": f"shadow-{i}"}).json()
        assert after["predictions"] == before["predictions"] and after["version"] == 1

    def logged() -> list[Any]:
        project.events.flush()  # shadow copies run after their responses, then log
        found = project.events.query(kind="prediction.shadow", limit=100).items
        return found if len(found) >= 20 else []

    shadows = wait_until(logged, timeout=10, interval=0.1, message="20 shadow predictions logged")
    assert len(shadows) == 20
    for event in shadows:
        assert event.subject_version == "2" and event.payload["agree"] is False
        assert np.allclose(event.payload["output"], np.asarray(event.payload["primary_output"]) * 2)


def test_canary_then_rollback_under_load_fails_no_request(
    server: Running, project: Project
) -> None:
    routes = RouteStore(project.store, project.events, project.registry)
    canary = routes.set("sums", RoutePolicy.canary(1, 2, 50), actor="test")
    wait_for_route(server.url, "sums", canary.revision)
    rows = frame(1, seed=4)
    total = float(rows.sum(axis=1).iloc[0])
    seen: list[tuple[float, int, int]] = []  # (sent at, status, version)

    async def load(stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:

            async def one() -> None:
                while not stop.is_set():
                    sent = time.monotonic()
                    r = await client.post(
                        "/v1/models/sums/predict", json={"records": rows.to_dict("records")}
                    )
                    body = r.json()
                    version = body.get("version", -1)
                    if r.status_code == 200:
                        assert abs(body["predictions"][0] - total * version) < 1e-6
                    seen.append((sent, r.status_code, version))

            await asyncio.gather(*(one() for _ in range(8)))

    async def scenario() -> tuple[float, float]:
        stop = asyncio.Event()
        task = asyncio.create_task(load(stop))
        await wait_until_async(
            lambda: {v for _, _, v in seen} >= {1, 2},
            message="the canary and the stable version to answer under load",
        )
        rolled = time.monotonic()
        back = await asyncio.to_thread(routes.rollback, "sums", actor="oncall", reason="test")
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as watch:

            async def applied() -> bool:
                return _has_revision(await watch.get("/v1/models"), "sums", back.revision)

            await wait_until_async(
                applied, timeout=10, interval=0.05, message="the rollback to reach the server"
            )
        switched = time.monotonic()
        await wait_until_async(
            lambda: sum(1 for t, _, _ in seen if t > switched) >= 40,
            message="40 requests sent after the rollback was applied to be answered",
        )
        stop.set()
        await task
        return rolled, switched

    rolled, switched = asyncio.run(scenario())
    assert seen and all(status == 200 for _, status, _ in seen)
    assert {v for t, _, v in seen if t < rolled} == {1, 2}  # the canary was live
    # Within one poll and a load (every version is loaded: no load) the server has switched,
    # and from then on every request is on the previous route.
    assert switched - rolled < 2.0, f"the rollback took {switched - rolled:.2f} s to apply"
    late = [v for t, _, v in seen if t > switched]
    assert late and set(late) == {1}


def test_metrics_and_openapi(server: Running) -> None:
    predict(server.url, frame(1))
    text = httpx.get(f"{server.url}/metrics").text
    assert "conveyor_requests_total{arm=" in text and 'model="sums"' in text
    assert "conveyor_batch_rows_bucket" in text
    # The pipeline's own series, and the event log's write path (shed counts included).
    assert (
        'conveyor_http_requests_total{route="POST /v1/models/{model}/predict",status="200"}' in text
    )
    for state in ("unwritten", "shed", "spilled", "replayed"):
        assert f'conveyor_events{{state="{state}"}}' in text
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v2/models/{model}/infer" in spec["paths"]


def test_keys_and_roles_are_enforced(project: Project) -> None:
    from conveyor.governance.keys import ApiKeys

    keys = ApiKeys(project.store, project.events)
    viewer, _ = keys.create("dash", "viewer")
    predictor, _ = keys.create("app", "predictor")
    running = Running(project)
    try:
        rows = frame(1)
        assert predict(running.url, rows).status_code == 401
        assert predict(running.url, rows, headers={"x-api-key": "cvy_nope"}).status_code == 401
        forbidden = predict(running.url, rows, headers={"authorization": f"Bearer {viewer}"})
        assert forbidden.status_code == 403 and forbidden.json()["code"] == "forbidden"
        ok = predict(running.url, rows, headers={"authorization": f"Bearer {predictor}"})
        assert ok.status_code == 200
        denied = httpx.post(
            f"{running.url}/v1/models/sums/rollback", headers={"x-api-key": predictor}
        )
        assert denied.status_code == 403
    finally:
        running.stop()


# The HTTP surface is the same on every backend: the fuzz runs on the most distant set
# (PostgreSQL + NATS), whose store is the strictest (the one backend-specific 5xx it found,
# NUL in text, was PostgreSQL's; its test below runs on the embedded set too). The other
# sets, the embedded one included, are exercised by the tests above.
@matrix.only("backend_set", "postgres-nats")
def test_schemathesis_finds_no_server_error(server: Running) -> None:
    """Generated requests from the published OpenAPI document never get a 5xx."""
    import shutil
    import subprocess

    st = shutil.which("st") or str(Path(__file__).parents[2] / ".venv" / "bin" / "st")
    result = subprocess.run(
        [
            st,
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "10",  # per operation, beside each operation's documented examples
            "--phases",
            "examples,fuzzing",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    print(result.stdout[-1500:])


@matrix.only("backend_set", "embedded", "postgres-nats")
def test_a_nul_byte_in_a_path_or_query_is_a_422_never_a_500(server: Running) -> None:
    """Schemathesis found it: PostgreSQL refuses NUL in text, and the driver's error was
    a 500 (GET /v1/flags?model=%00...). Every route refuses it first, naming the field."""
    for path in (
        "/v1/flags?model=%00%12e%7D",
        "/v1/rollouts?model=a%00b",
        "/v1/models/su%00ms/predict",
        "/v1/models/su%00ms/route",
    ):
        method = "POST" if path.endswith("predict") else "GET"
        answer = httpx.request(method, f"{server.url}{path}", json={"records": [{"a": 1}]})
        assert answer.status_code == 422, (path, answer.status_code, answer.text)
        body = answer.json()
        assert body["code"] == "invalid_input" and body["field"] in ("query", "model"), body


@matrix.only("backend_set", "embedded", "postgres-nats")
def test_a_nul_byte_in_a_json_body_field_is_a_422_never_a_500(server: Running) -> None:
    """Schemathesis found it too (a CI run): POST /v1/reviews/{id}/reject with a comment
    holding \\u0000 reached PostgreSQL's UPDATE and its DataError was a 500. A declared
    body field refuses it first, naming the field, on every backend."""
    answer = httpx.post(f"{server.url}/v1/reviews/nope/reject", content=b'{"comment": "a\\u0000b"}')
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_input" and answer.json()["field"] == "comment"
    # without the NUL the same call reaches the store: the review is unknown
    plain = httpx.post(f"{server.url}/v1/reviews/nope/reject", json={"comment": "ab"})
    assert plain.status_code == 404, plain.text
