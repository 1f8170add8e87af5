"""``?version=ALIAS`` on the native predict: the alias is resolved through the registry, and
the version it names is checked like a number (on no route: deployer). ``conveyor predict
NAME@ALIAS --url`` forwards the alias instead of dropping it; ``NAME`` is routed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_support import linear_project, wait_served

from cli_support import conveyor
from conveyor.governance.keys import ApiKeys
from conveyor.project import Project
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer

ROW = {"records": [{"a": 1.0, "b": 2.0}]}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """m@1 routed, m@2 aliased blue (on no route), m@3 the newest; keys of two roles."""
    root = tmp_path / "p"
    project = linear_project(
        root, name="alias", serving="{poll_interval_s: 0.2}", scales=(1.0, 2.0, 3.0)
    )
    project.registry.set_alias("m", "blue", 2, actor="test")
    keys = ApiKeys(project.store, project.events)
    tokens = {role: keys.create(role, role)[0] for role in ("predictor", "deployer")}
    server = ThreadedServer(create_app(project))
    server.start()
    try:
        wait_served(server.url, {"x-api-key": tokens["predictor"]})
        yield server.url, tokens, root
    finally:
        server.stop()
        project.close()


def _predict(url: str, token: str, version: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/models/m/predict",
        params={"version": version},
        json=ROW,
        headers={"x-api-key": token},
        timeout=30,
    )


def test_an_alias_names_its_version_with_the_same_role_rule(
    served: tuple[str, dict[str, str], Path],
) -> None:
    url, tokens, root = served
    answer = _predict(url, tokens["deployer"], "blue")
    assert answer.status_code == 200, answer.text
    assert (answer.json()["version"], answer.json()["arm"]) == (2, "direct")
    assert answer.json()["predictions"] == pytest.approx([6.0])
    # m@2 is on no route: a predictor may not reach it by its alias any more than by number.
    refused = _predict(url, tokens["predictor"], "blue")
    assert refused.status_code == 403, refused.text
    assert refused.json()["action"] == "serving.predict_unrouted"
    unknown = _predict(url, tokens["deployer"], "nope")
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found", unknown.text
    assert "nope" in unknown.json()["message"]

    with Project.open(root, env={}) as project:  # m@blue goes on the route, as a shadow
        RouteStore(project.store, project.events, project.registry).set(
            "m", RoutePolicy.fixed(1, shadow=[2])
        )
    wait = _wait_shadowed(url, tokens["predictor"])
    assert wait.json()["version"] == 2


def _wait_shadowed(url: str, token: str) -> httpx.Response:
    from conveyor.testing.wait import wait_until

    found: list[httpx.Response] = []

    def allowed() -> bool:
        found[:] = [_predict(url, token, "blue")]
        return found[0].status_code == 200

    wait_until(allowed, message="the route with m@2 shadowed reaches the worker")
    return found[0]


def _cli(root: Path, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "predict", *args, "-d", json.dumps(ROW)],
        cwd=root.parent,  # no project here: the server has it
        env={**env, "CONVEYOR_API_KEY": token},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _in_process(root: Path, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (cli_support)."""
    return conveyor(
        "predict", *args, "-d", json.dumps(ROW), cwd=root.parent, env={"CONVEYOR_API_KEY": token}
    )


def test_the_cli_forwards_the_alias_and_says_which_version_answered(
    served: tuple[str, dict[str, str], Path],
) -> None:
    url, tokens, root = served
    by_alias = _cli(root, tokens["deployer"], "m@blue", "--url", url)
    assert by_alias.returncode == 0, by_alias.stderr
    assert json.loads(by_alias.stdout)["version"] == 2
    assert by_alias.stderr.strip() == f"m@2 answered (by the server at {url}, as m@blue)"
    routed = _in_process(root, tokens["predictor"], "m", "--url", url)
    assert routed.returncode == 0, routed.stderr
    assert json.loads(routed.stdout)["version"] == 1
    assert routed.stderr.strip() == f"m@1 answered (by the server at {url}, arm v1)"
    refused = _in_process(root, tokens["predictor"], "m@blue", "--url", url)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().startswith("error: ") and "deployer" in refused.stderr
