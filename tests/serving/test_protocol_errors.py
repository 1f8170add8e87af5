"""Protocol errors say the most useful thing first: an unknown model is a 404 about the model
whatever its body, on the native and the v2 routes; every error body is JSON."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_support import linear_project, wait_served

from conveyor.governance.keys import ApiKeys
from conveyor.project import Project
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    project: Project = linear_project(tmp_path, name="protocol")
    token, _ = ApiKeys(project.store, project.events).create("app", "predictor")
    headers = {"x-api-key": token}
    server = ThreadedServer(create_app(project))
    server.start()
    try:
        wait_served(server.url, headers)
        yield server.url, headers
    finally:
        server.stop()
        project.close()


@pytest.mark.parametrize(
    "path",
    ["/v1/models/nope/predict", "/v2/models/nope/infer", "/v2/models/nope/versions/1/infer"],
)
@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"records": []}'])
def test_an_unknown_model_is_a_404_about_the_model_whatever_the_body(
    served: tuple[str, dict[str, str]], path: str, body: bytes
) -> None:
    url, headers = served
    answer = httpx.post(url + path, content=body, headers=headers, timeout=10)
    assert answer.status_code == 404, answer.text
    assert answer.json()["code"] == "not_found" and "nope" in answer.json()["message"]


def test_a_known_model_with_a_bad_body_is_a_400_about_the_body(
    served: tuple[str, dict[str, str]],
) -> None:
    url, headers = served
    answer = httpx.post(url + "/v1/models/m/predict", content=b"{not json", headers=headers)
    assert answer.status_code == 400 and answer.json()["field"] == "body", answer.text
    v2 = httpx.post(url + "/v2/models/m/infer", content=b"{not json", headers=headers)
    assert v2.status_code == 400 and v2.headers["content-type"] == "application/json", v2.text
