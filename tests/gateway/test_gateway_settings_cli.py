"""The gateway: section is checked when the spec loads (references, weights, the prefix),
and ``conveyor llm models|test`` read it: test sends one call through the routing, a
fallback shown, and exits 1 when no deployment answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

import conveyor.cli  # noqa: F401  (a capability's CLI module loads after the CLI, as for all)
from conveyor.gateway.cli import llm_app
from conveyor.gateway.settings import GatewaySpec
from conveyor.project import init_project
from conveyor.testing.fake_openai import serve_fake_openai

BASE: dict[str, Any] = {
    "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    "deployments": {"a": {"provider": "p", "model": "m-a"}, "b": {"provider": "p", "model": "m-b"}},
}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"providers": {"p": {"kind": "bedrock"}}}, "bedrock"),
        ({"deployments": {"a": {"provider": "nope", "model": "x"}}}, "no provider 'nope'"),
        ({"models": {"fast": ["a", "zz"]}}, "no deployment 'zz'"),
        ({"models": {"fast": {"deployments": ["a"], "weights": {"b": 1}}}}, "'b' is not one"),
        ({"models": {"fast": ["a", "a"]}}, "listed twice"),
        ({"models": {"a": ["b"]}}, "also a deployment"),
        ({"prefix": "/v1"}, "prefix"),
    ],
)
def test_a_wrong_gateway_section_is_refused_naming_the_mistake(
    change: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        GatewaySpec.model_validate({**BASE, **change})


def test_the_shorthand_and_the_defaults() -> None:
    spec = GatewaySpec.model_validate({**BASE, "models": {"fast": ["a", "b"], "one": "b"}})
    assert spec.models["fast"].deployments == ["a", "b"] and spec.models["one"].deployments == ["b"]
    assert spec.prefix == "/llm/v1" and spec.deployment("a").model == "m-a"
    assert spec.providers["p"].settings() == {"base_url": "http://127.0.0.1:9/v1"}


@pytest.fixture
def project_root(tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    with serve_fake_openai() as fake:
        init_project(tmp_path, name="gwcli")
        spec = {
            "providers": {
                "fake": {"kind": "openai", "base_url": fake.url + "/v1"},
                "dead": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
            },
            "deployments": {
                "up": {"provider": "fake", "model": "gpt-up"},
                "down": {"provider": "dead", "model": "x", "timeout_s": 5},
            },
            "models": {"fast": ["down", "up"], "lost": ["down"]},
            "retry": {"attempts": 0},
        }
        with (tmp_path / "conveyor.yaml").open("a") as fh:
            fh.write("\ngateway: " + json.dumps(spec) + "\n")
        yield tmp_path, fake


def test_llm_models_and_llm_test(project_root: tuple[Path, Any]) -> None:
    root, fake = project_root
    runner = CliRunner()
    listed = runner.invoke(llm_app, ["models", "-C", str(root), "--json"])
    assert listed.exit_code == 0, listed.output
    items = {i["model"]: i for i in json.loads(listed.output)["items"]}
    assert items["fast"]["routes_to"] == ["down", "up"]
    assert items["up"]["upstream_model"] == "gpt-up"

    called = runner.invoke(llm_app, ["test", "fast", "hi there", "-C", str(root), "--json"])
    assert called.exit_code == 0, called.output
    found = json.loads(called.output)
    assert found["answer"] == "echo: hi there" and found["deployment"] == "up"
    assert found["failures"] == [{"deployment": "down", "kind": "connect", "status": None}]

    streamed = runner.invoke(
        llm_app, ["test", "up", "a b c", "--stream", "-C", str(root), "--json"]
    )
    assert json.loads(streamed.output)["answer"] == "echo: a b c"
    assert fake.requests[-1]["stream"] is True

    lost = runner.invoke(llm_app, ["test", "lost", "-C", str(root)])
    assert lost.exit_code == 1 and "connect" in lost.output
