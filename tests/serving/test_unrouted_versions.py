"""Naming a version that is on no route (a candidate, one that failed its gates) needs the
deployer role, or a server setting that allows it; routed and shadowed versions do not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_support import linear_project, wait_served

from conveyor.governance.keys import ApiKeys
from conveyor.project import Project
from conveyor.serving.app import create_app
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer

ROW = {"records": [{"a": 1.0, "b": 2.0}]}
V2_ROW = {
    "inputs": [
        {"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
        {"name": "b", "shape": [1], "datatype": "FP64", "data": [2.0]},
    ]
}


def _project(root: Path, *, allow: bool) -> Project:
    """@1 served, @2 shadowed, @3 on no route."""
    project: Project = linear_project(
        root,
        name="unrouted",
        serving=f"{{poll_interval_s: 0.2, allow_unrouted_versions: {str(allow).lower()}}}",
        scales=(1.0, 2.0, 3.0),
        policy=RoutePolicy.fixed(1, shadow=[2]),
    )
    return project


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    project = _project(tmp_path, allow=False)
    keys = ApiKeys(project.store, project.events)
    tokens = {role: keys.create(role, role)[0] for role in ("viewer", "predictor", "deployer")}
    server = ThreadedServer(create_app(project))
    server.start()
    try:
        wait_served(server.url, {"x-api-key": tokens["viewer"]})
        yield server.url, tokens
    finally:
        server.stop()
        project.close()


def _predict(url: str, token: str, version: int) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/models/m/predict",
        params={"version": version},
        json=ROW,
        headers={"x-api-key": token},
        timeout=10,
    )


def test_a_predictor_calls_routed_and_shadowed_versions_only(
    served: tuple[str, dict[str, str]],
) -> None:
    url, tokens = served
    for version, expected in ((1, 3.0), (2, 6.0)):
        answer = _predict(url, tokens["predictor"], version)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == pytest.approx([expected])
    refused = _predict(url, tokens["predictor"], 3)
    assert refused.status_code == 403, refused.text
    body = refused.json()
    assert body["code"] == "forbidden" and body["action"] == "serving.predict_unrouted"
    assert body["required_role"] == "deployer"
    infer = httpx.post(
        f"{url}/v2/models/m/versions/3/infer",
        json=V2_ROW,
        headers={"x-api-key": tokens["predictor"]},
        timeout=10,
    )
    assert infer.status_code == 403 and infer.json()["code"] == "forbidden"
    meta = httpx.get(
        f"{url}/v2/models/m/versions/3", headers={"x-api-key": tokens["viewer"]}, timeout=10
    )
    assert meta.status_code == 403 and meta.json()["code"] == "forbidden"


def test_a_deployer_calls_any_registered_version(served: tuple[str, dict[str, str]]) -> None:
    url, tokens = served
    answer = _predict(url, tokens["deployer"], 3)
    assert answer.status_code == 200 and answer.json()["predictions"] == pytest.approx([9.0])
    missing = _predict(url, tokens["deployer"], 4)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    meta = httpx.get(
        f"{url}/v2/models/m/versions/3", headers={"x-api-key": tokens["deployer"]}, timeout=10
    )
    assert meta.status_code == 200, meta.text


def test_the_server_setting_opens_unrouted_versions_to_predictors(tmp_path: Path) -> None:
    project = _project(tmp_path, allow=True)
    token, _ = ApiKeys(project.store, project.events).create("app", "predictor")
    server = ThreadedServer(create_app(project))
    server.start()
    try:
        answer = _predict(server.url, token, 3)
        assert answer.status_code == 200 and answer.json()["predictions"] == pytest.approx([9.0])
    finally:
        server.stop()
        project.close()
