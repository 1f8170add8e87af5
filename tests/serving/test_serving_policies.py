"""Routing modes, cache, limits, traces and shutdown through a running server, once per
backend set of the matrix (the cache and the rate limiter in memory and on Redis, routes on
SQLite and PostgreSQL, the event log on each kind of backend)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import Slow
from test_serving_app import Running, frame, predict, wait_for_route

from conveyor.project import Project, init_project
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.testing.ports import worker_port
from conveyor.testing.wait import wait_until, wait_until_async


def _project(tmp_path: Path, serving: str, env: dict[str, str]) -> Project:
    from sklearn.linear_model import LinearRegression

    init_project(tmp_path, name="policies")
    with (tmp_path / "conveyor.yaml").open("a") as f:
        f.write(f"serving: {serving}\n")
    proj = Project.open(tmp_path, env=env)
    X = frame(200)
    for scale in (1.0, 2.0, 3.0):
        proj.registry.register(
            "sums", LinearRegression().fit(X, X.sum(axis=1) * scale), signature_from=X
        )
    return proj


@pytest.fixture
def project(tmp_path: Path, backend_set: dict[str, str]) -> Iterator[Project]:
    proj = _project(
        tmp_path,
        "{auth: disabled, poll_interval_s: 0.2, batching: {max_batch_size: 4, max_queue: 8}}",
        backend_set,
    )
    yield proj
    proj.close()


def _routes(project: Project) -> RouteStore:
    return RouteStore(project.store, project.events, project.registry)


def test_ab_sticky_flags_and_cache(project: Project) -> None:
    policy = RoutePolicy.from_dict(
        {
            "mode": "ab",
            "versions": [
                {"version": 1, "weight": 50, "arm": "control"},
                {"version": 2, "weight": 50, "arm": "treatment"},
            ],
            "sticky_header": "x-user-id",
            "flags": [{"name": "beta", "match": {"tier": "beta"}, "version": 3}],
        }
    )
    _routes(project).set("sums", policy, actor="test")
    server = Running(project)
    try:
        rows = frame(1, seed=5)
        arms: dict[str, set[str]] = {}
        for user in range(40):
            for _ in range(2):
                body = predict(server.url, rows, headers={"x-user-id": f"u{user}"}).json()
                arms.setdefault(f"u{user}", set()).add(body["arm"])
        assert all(len(a) == 1 for a in arms.values())  # sticky: a user keeps one arm
        counts = Counter(next(iter(a)) for a in arms.values())
        assert set(counts) == {"control", "treatment"}
        beta = predict(
            server.url, rows, headers={"x-user-id": "u1", "x-conveyor-attr-tier": "beta"}
        ).json()
        assert beta["arm"] == "flag:beta" and beta["version"] == 3
        body = httpx.post(
            f"{server.url}/v1/models/sums/predict",
            json={"records": rows.to_dict("records"), "attributes": {"tier": "beta"}},
        ).json()
        assert body["version"] == 3

        # The same input to the same version is answered from the cache the second time.
        fresh = frame(1, seed=99)
        first = predict(server.url, fresh, headers={"x-user-id": "u1"}).json()
        second = predict(server.url, fresh, headers={"x-user-id": "u1"}).json()
        assert not first["cached"] and second["cached"]
        assert first["predictions"] == second["predictions"]
        version = second["version"]
        other = 3 if version != 3 else 1
        state = _routes(project).set("sums", RoutePolicy.fixed(other), actor="test")
        wait_for_route(server.url, "sums", state.revision)
        moved = predict(server.url, fresh, headers={"x-user-id": "u1"}).json()
        assert moved["version"] == other and not moved["cached"]
        state = _routes(project).set("sums", RoutePolicy.fixed(version), actor="test")
        wait_for_route(server.url, "sums", state.revision)
        back = predict(server.url, fresh, headers={"x-user-id": "u1"}).json()
        assert back["version"] == version and back["cached"]  # reachable again: same version
        text = httpx.get(f"{server.url}/metrics").text
        assert 'conveyor_cache_lookups_total{model="sums",result="hit"' in text
    finally:
        server.stop()


def test_queue_limit_answers_503_with_retry_after(project: Project) -> None:
    _routes(project).set("sums", RoutePolicy.fixed(1), actor="test")
    server = Running(project)
    try:
        too_many = predict(server.url, frame(20))  # more rows than the queue holds
        assert too_many.status_code == 503 and too_many.json()["code"] == "overloaded"
        assert int(too_many.headers["retry-after"]) >= 1
        assert predict(server.url, frame(3)).status_code == 200
    finally:
        server.stop()


def test_rate_limit_429_per_key(project: Project) -> None:
    from conveyor.governance.keys import ApiKeys

    token, _ = ApiKeys(project.store, project.events).create(
        "bursty", "predictor", rate_per_second=0.5, burst=3
    )
    _routes(project).set("sums", RoutePolicy.fixed(1), actor="test")
    server = Running(project)
    try:
        codes = [
            predict(server.url, frame(1), headers={"x-api-key": token}).status_code
            for _ in range(5)
        ]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        limited = predict(server.url, frame(1), headers={"x-api-key": token})
        assert limited.json()["code"] == "rate_limited" and "retry-after" in limited.headers
    finally:
        server.stop()


@pytest.fixture
def spans() -> Any:
    """The spans this process finishes, from now on (one provider per process, shared
    with every test module: conveyor.testing.tracing)."""
    from conveyor.testing.tracing import span_exporter

    return span_exporter()


def test_traces_carry_version_arm_and_flag(project: Project, spans: Any) -> None:
    exporter = spans
    _routes(project).set(
        "sums",
        RoutePolicy.from_dict(
            {
                "mode": "fixed",
                "versions": [{"version": 1}],
                "flags": [{"name": "staff", "match": {"team": "risk"}, "version": 2}],
            }
        ),
        actor="test",
    )
    server = Running(project)
    try:
        predict(server.url, frame(1), headers={"x-conveyor-attr-team": "risk"})
        row = frame(1).to_numpy()[0].tolist()
        body = {
            "inputs": [{"name": "x", "shape": [1, len(row)], "datatype": "FP64", "data": row}],
            "parameters": {"attributes": {"team": "risk"}},
        }
        infer = httpx.post(f"{server.url}/v2/models/sums/infer", json=body, timeout=10)
        assert infer.status_code == 200, infer.text
        httpx.get(f"{server.url}/v2/health/ready", timeout=10)
    finally:
        server.stop()
    finished = exporter.get_finished_spans()
    # Every route gets its span, named after the route; v2 infer as well as native predict.
    for name in ("POST /v1/models/{model}/predict", "POST /v2/models/{model}/infer"):
        spans = [s for s in finished if s.name == name]
        assert spans and spans[-1].attributes is not None, [s.name for s in finished]
        attributes = dict(spans[-1].attributes)
        assert attributes["model"] == "sums" and attributes["model.version"] == 2
        assert attributes["route.arm"] == "flag:staff" and attributes["route.flag"] == "staff"
        assert attributes["http.route"] == name.split(" ", 1)[1]
        assert len(str(attributes["request_id"])) == 32
    assert any(s.name == "GET /v2/health/ready" for s in finished)


def test_cli_serve_workers_metrics_logs_and_graceful_shutdown(
    tmp_path: Path, backend_set: dict[str, str]
) -> None:
    proj = _project(
        tmp_path, "{auth: disabled, workers: 2, batching: {max_batch_size: 1}}", backend_set
    )
    X = frame(10)
    proj.registry.register("slow", Slow(0.8), signature_from=X)
    _routes(proj).set("sums", RoutePolicy.fixed(1), actor="test")
    _routes(proj).set("slow", RoutePolicy.fixed(1), actor="test")
    proj.close()
    port = worker_port()
    env = {**os.environ, **backend_set, "PYTHONPATH": str(Path(__file__).parent)}
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "serve", "--port", str(port), "-C", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, "conveyor serve exited before it was ready"
            try:
                return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=60, interval=0.1, message="conveyor serve to be ready")
        for _ in range(30):
            assert predict(url, frame(1)).status_code == 200

        def counted() -> float:
            text = httpx.get(f"{url}/metrics").text
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("conveyor_requests_total{") and 'model="sums"' in line
            )

        # Both workers' counts, aggregated at scrape time (prometheus multiprocess mode).
        wait_until(
            lambda: counted() >= 30, timeout=10, message="30 requests counted over both workers"
        )
        assert counted() == 30
        # Each worker's CPU time, whichever worker answers the scrape (read with psutil).
        text = httpx.get(f"{url}/metrics").text
        cpu = [
            ln for ln in text.splitlines() if ln.startswith("conveyor_process_cpu_seconds_total{")
        ]
        assert len({ln.split('pid="')[1].split('"')[0] for ln in cpu}) == 2, cpu
        assert (
            predict(
                url, frame(1), headers={"x-request-id": "bad-1"}, params={"version": "77"}
            ).status_code
            == 404
        )

        async def in_flight() -> list[int]:
            sent: set[int] = set()
            async with httpx.AsyncClient(timeout=30) as client:

                async def one(i: int) -> int:
                    async def trace(event: str, info: dict[str, Any]) -> None:
                        if event == "http11.send_request_body.complete":
                            sent.add(i)

                    r = await client.post(
                        f"{url}/v1/models/slow/predict",
                        json={"records": frame(1, seed=i).to_dict("records")},
                        headers={"x-request-id": f"slow-{i}"},
                        extensions={"trace": trace},
                    )
                    return r.status_code

                tasks = [asyncio.create_task(one(i)) for i in range(4)]
                # Each slow request has reached the server in full (0.8 s in the model each,
                # two workers: the last answers after 1.6 s); then the server is asked to stop.
                await wait_until_async(
                    lambda: len(sent) == 4, message="the four slow requests to be sent"
                )
                process.send_signal(signal.SIGTERM)
                return list(await asyncio.gather(*tasks))

        assert asyncio.run(in_flight()) == [200, 200, 200, 200]
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    _, err = process.communicate()
    assert process.returncode == 0, err[-2000:]
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(e.get("request_id") == "bad-1" and "404" in e["message"] for e in logs)
    with Project.open(tmp_path, env=backend_set) as reopened:
        slow = reopened.events.query(kind="prediction", subject="slow", limit=10).items
        assert sorted(e.request_id for e in slow) == [f"slow-{i}" for i in range(4)]


def test_enrich_hook_joins_features_by_entity_key(project: Project) -> None:
    """The request path's seam for an online feature store: rows get features by key."""
    import pyarrow as pa

    from conveyor.serving.app import create_app

    stored = {"c1": 10.0, "c2": 20.0}  # f3 by customer, as an online store would hold it

    async def enrich(model: str, version: object, rows: pa.Table) -> pa.Table:
        keys = rows.column("customer").to_pylist()
        rows = rows.drop_columns(["customer"])
        return rows.append_column("f3", pa.array([stored[k] for k in keys]))

    _routes(project).set("sums", RoutePolicy.fixed(1), actor="test")
    server = Running(project, app=create_app(project, enrich=enrich))
    try:
        body = httpx.post(
            f"{server.url}/v1/models/sums/predict",
            json={"records": [{"f0": 1.0, "f1": 1.0, "f2": 1.0, "customer": "c2"}]},
        ).json()
        assert abs(body["predictions"][0] - 23.0) < 1e-6
    finally:
        server.stop()
