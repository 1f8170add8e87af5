"""Routes as policy data: an alias re-routed over HTTP or the CLI reaches the running
server within its poll interval (no restart), a new alias appears, a deletion returns to
the spec's route; every change is checked and audited, and needs llm.manage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from gateway_api_support import gateway_spec, served_gateway
from typer.testing import CliRunner

import conveyor.cli  # noqa: F401  (a capability's CLI module loads after the CLI, as for all)
from conveyor.gateway.cli import llm_app
from conveyor.testing.wait import wait_until


def _spec(fake_url: str) -> dict[str, Any]:
    return {**gateway_spec(fake_url), "routes_poll_s": 0.2}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with served_gateway(tmp_path_factory.mktemp("gwroutes"), _spec) as found:
        yield found


def _answered_by(served: dict[str, Any], model: str) -> str | None:
    client = openai.OpenAI(base_url=served["base"], api_key=served["key"], max_retries=0)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
    except openai.NotFoundError:
        return None
    finally:
        client.close()
    return raw.headers["x-conveyor-deployment"]


def test_a_route_changed_over_http_reaches_the_running_server(served: dict[str, Any]) -> None:
    assert _answered_by(served, "fast") == "a"  # the spec's: [a, b]
    admin = {"authorization": f"Bearer {served['admin']}"}
    with httpx.Client(base_url=served["url"], timeout=10) as http:
        changed = http.put("/v1/llm/routes/fast", json={"deployments": ["b", "a"]}, headers=admin)
        assert changed.status_code == 200, changed.text
        assert changed.json()["version"] == 1
        wait_until(lambda: _answered_by(served, "fast") == "b", message="fast -> b", timeout=10)
        created = http.put("/v1/llm/routes/brand-new", json={"deployments": ["a"]}, headers=admin)
        assert created.status_code == 200
        wait_until(lambda: _answered_by(served, "brand-new") == "a", message="new", timeout=10)
        bad = http.put("/v1/llm/routes/fast", json={"deployments": ["nope"]}, headers=admin)
        assert bad.status_code == 422 and "no deployment 'nope'" in bad.json()["message"]
        viewer = {"authorization": f"Bearer {served['viewer']}"}
        refused = http.put("/v1/llm/routes/fast", json={"deployments": ["a"]}, headers=viewer)
        assert refused.status_code == 403
        listed = http.get("/v1/llm/routes", headers=viewer).json()["routes"]
        assert {r["alias"] for r in listed} == {"fast", "brand-new"}
        assert http.delete("/v1/llm/routes/fast", headers=admin).status_code == 200
        assert http.delete("/v1/llm/routes/fast", headers=admin).status_code == 404
        assert http.delete("/v1/llm/routes/brand-new", headers=admin).status_code == 200
    wait_until(lambda: _answered_by(served, "fast") == "a", message="back to the spec", timeout=10)
    wait_until(lambda: _answered_by(served, "brand-new") is None, message="gone", timeout=10)
    project = served["project"]
    project.events.flush()
    audit = project.events.query(kind="llm.route_set", subject="fast").items
    assert audit[0].payload["deployments"] == ["b", "a"] and audit[0].payload["previous"] is None
    assert audit[0].actor == "key:admin"


def test_the_cli_sets_shows_and_deletes_a_route(served: dict[str, Any]) -> None:
    root = str(served["project"].root)
    env = {"CONVEYOR_API_KEY": served["admin"]}
    runner = CliRunner()
    done = runner.invoke(
        llm_app,
        ["route", "set", "split", "--to", "a,b", "--weight", "a=1", "--weight", "b=0", "-C", root],
        env=env,
    )
    assert done.exit_code == 0, done.output
    shown = runner.invoke(llm_app, ["route", "show", "--json", "-C", root], env=env)
    (route,) = [r for r in json.loads(shown.stdout)["items"] if r["alias"] == "split"]
    assert route["weights"] == {"a": 1.0, "b": 0.0}
    # a split whose only weighted deployment is a: every call drawn to a
    # the spec's split sends 1 call in 4 to a: five in a row is the stored route (p < 0.001)
    wait_until(
        lambda: all(_answered_by(served, "split") == "a" for _ in range(5)),
        message="split -> a",
        timeout=10,
    )
    assert all(_answered_by(served, "split") == "a" for _ in range(20))
    bad = runner.invoke(llm_app, ["route", "set", "a", "--to", "b", "-C", root], env=env)
    assert bad.exit_code != 0 and "deployment's name" in " ".join(bad.output.split())
    gone = runner.invoke(llm_app, ["route", "delete", "split", "-C", root], env=env)
    assert gone.exit_code == 0, gone.output
