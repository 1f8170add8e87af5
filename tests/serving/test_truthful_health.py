"""Readiness tells the truth: a live revision this server cannot load makes it degraded (it
keeps serving the revision it had, says why in its readiness body, a gauge and an event, and
recovers by itself); a model with nothing loadable answers 503 model_unavailable, never 404.
And a route change naming a version that cannot serve is refused before it is committed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_support import linear_project, wait_served
from typer.testing import CliRunner

from conveyor.cli import app as cli_app
from conveyor.errors import VersionRefusedError
from conveyor.project import Project
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer
from conveyor.testing.artifacts import flip_byte
from conveyor.testing.wait import wait_until

ROW = {"records": [{"a": 1.0, "b": 2.0}]}
OPEN = "{poll_interval_s: 0.1, auth: disabled}"


def _tamper(project: Project, number: int) -> None:
    flip_byte(project.artifacts, project.registry.get("m", number).artifact_digest, 10)


def _cli(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli_app, [*args, "-C", str(root)])
    return result.exit_code, result.output


def _prediction(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/m/predict", json=ROW, timeout=10)


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[tuple[Project, ThreadedServer]]:
    project = linear_project(tmp_path, name="health", serving=OPEN, scales=(1.0, 2.0))
    server = ThreadedServer(create_app(project))
    server.app.state.server.watcher.retry_s = 0.3
    server.start()
    try:
        wait_served(server.url)
        yield project, server
    finally:
        server.stop()
        project.close()


def test_a_live_revision_that_cannot_load_degrades_readiness_and_recovers(
    serving: tuple[Project, ThreadedServer], tmp_path: Path
) -> None:
    project, server = serving
    url = server.url
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True, "status": "ready"}
    digest = project.registry.get("m", 2).artifact_digest
    good = project.artifacts.get(digest)
    _tamper(project, 2)
    # Committed where the artifact was still intact (as from another host): no verification.
    RouteStore(project.store, project.events, project.registry, verify=False).set(
        "m", RoutePolicy.fixed(2)
    )

    def degraded() -> bool:
        return httpx.get(f"{url}/v2/health/ready").status_code == 503

    wait_until(degraded, message="readiness turns false", timeout=20)
    body = httpx.get(f"{url}/v2/health/ready").json()
    assert body["ready"] is False and body["status"] == "degraded"
    failure = body["models"]["m"]
    assert failure["revision"] == 2 and failure["serving_revision"] == 1
    assert failure["reason"] == "artifact_tampered" and str(tmp_path) not in json.dumps(body)
    # The revision it had keeps answering: y = a + b.
    answer = _prediction(url)
    assert answer.status_code == 200 and answer.json()["predictions"] == pytest.approx([3.0])
    # The model-level probe says why, as JSON with the stable code.
    model_ready = httpx.get(f"{url}/v2/models/m/ready")
    assert model_ready.status_code == 503 and model_ready.json()["code"] == "model_unavailable"
    metrics = httpx.get(f"{url}/metrics").text
    assert 'conveyor_route_degraded{model="m"} 1.0' in metrics
    # One event per revision and worker, however many polls retried it.
    project.events.flush()
    failed = project.events.latest(10, kind="route.failed", subject="m")
    assert [e.payload["reason"] for e in failed] == ["artifact_tampered"]
    code, out = _cli(tmp_path, "route", "show", "m", "--json")
    assert code == 0, out
    shown = json.loads(out)["degraded"]
    assert len(shown) == 1 and shown[0]["reason"] == "artifact_tampered"
    assert shown[0]["serving_revision"] == 1
    code, out = _cli(tmp_path, "route", "show", "m")
    assert "degraded" in out and "artifact_tampered" in out and "serving revision 1" in out

    # The operator restores the bytes from a backup: recovery is automatic.
    project.artifacts.fs.pipe_file(project.artifacts.key(digest), good)
    wait_until(lambda: not degraded(), message="readiness recovers", timeout=20)
    assert _prediction(url).json()["predictions"] == pytest.approx([6.0])
    assert 'conveyor_route_degraded{model="m"} 0.0' in httpx.get(f"{url}/metrics").text
    project.events.flush()
    applied = project.events.latest(10, kind="route.applied", subject="m")
    assert [e.payload["revision"] for e in applied] == [2]
    code, out = _cli(tmp_path, "route", "show", "m", "--json")
    assert json.loads(out)["degraded"] == []


def _answers(url: str) -> bool:
    """Whether ``url`` answers 200; False while the server's thread is not listening yet."""
    try:
        return httpx.get(url).status_code == 200
    except httpx.ConnectError:
        return False


def test_predictions_for_an_unloadable_model_are_503_model_unavailable(tmp_path: Path) -> None:
    project = linear_project(tmp_path, name="nothing", serving=OPEN)
    _tamper(project, 1)
    server = ThreadedServer(create_app(project))
    server.thread.start()  # not start(): that waits for a readiness that must never come
    try:
        wait_until(
            lambda: _answers(f"{server.url}/v2/health/live"),
            message="the server listens",
        )
        ready = httpx.get(f"{server.url}/v2/health/ready")
        assert ready.status_code == 503 and ready.json()["models"]["m"]["serving_revision"] is None
        answer = _prediction(server.url)
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["code"] == "model_unavailable" and body["reason"] == "artifact_tampered"
        assert str(tmp_path) not in answer.text
    finally:
        server.stop()
        project.close()


def test_deploy_and_route_set_refuse_a_version_that_cannot_serve(tmp_path: Path) -> None:
    project = linear_project(tmp_path, name="refuse", serving=OPEN, scales=(1.0, 2.0))
    try:
        _tamper(project, 2)
        routes = RouteStore(project.store, project.events, project.registry)
        with pytest.raises(VersionRefusedError) as caught:
            routes.set("m", RoutePolicy.canary(1, 2, 10))
        assert caught.value.context["reason"] == "artifact_tampered"
        assert caught.value.code == "version_refused"
        code, out = _cli(tmp_path, "deploy", "m@2", "--canary", "10")
        assert code != 0 and "m@2 cannot serve" in out and "integrity check" in out, out
        code, out = _cli(
            tmp_path, "route", "set", "m", "--policy", '{"mode":"fixed","versions":[{"version":2}]}'
        )
        assert code != 0 and "m@2 cannot serve" in out, out
        assert routes.get("m").revision == 1  # nothing committed
        # Over HTTP: the server loads the version into its pool first, and refuses it.
        with ThreadedServer(create_app(project)) as server:
            answer = httpx.put(
                f"{server.url}/v1/models/m/route",
                json={"policy": {"mode": "fixed", "versions": [{"version": 2}]}},
                timeout=30,
            )
            assert answer.status_code == 409, answer.text
            body = answer.json()
            assert body["code"] == "version_refused" and body["reason"] == "artifact_tampered"
            assert str(tmp_path) not in answer.text
        assert routes.get("m").revision == 1
    finally:
        project.close()


def test_a_version_whose_warm_up_fails_is_refused_with_the_models_error(tmp_path: Path) -> None:
    """Registered without an example, a strict encoder refuses the synthesized rows."""
    from test_warmup import _frame, _strict_pipeline

    project = linear_project(tmp_path, name="cold", serving=OPEN)
    try:
        X, _ = _frame()
        project.registry.register("strict", _strict_pipeline(), signature_from=X.head(0))
        code, out = _cli(tmp_path, "deploy", "strict@1", "--json")
        assert code != 0, out
        assert "version_refused" in out and "warm_up_failed" in out, out
        assert "Found unknown categories" in out
        code, _ = _cli(tmp_path, "route", "show", "strict")
        assert code != 0  # no route was created
    finally:
        project.close()
