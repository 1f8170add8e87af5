"""Routes as policy data: an alias re-routed over HTTP or the CLI reaches the running
server within its poll interval (no restart), a new alias appears, a deletion returns to
the spec's route; rules travel with a route; every change is checked, numbered, kept in
the history (a rollback restores the one before), audited, and needs llm.manage."""

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


def _answered_by(
    served: dict[str, Any], model: str, headers: dict[str, str] | None = None
) -> str | None:
    client = openai.OpenAI(base_url=served["base"], api_key=served["key"], max_retries=0)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hi"}], extra_headers=headers
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
        assert changed.json()["revision"] == 1
        wait_until(lambda: _answered_by(served, "fast") == "b", message="fast -> b", timeout=10)
        created = http.put("/v1/llm/routes/brand-new", json={"deployments": ["a"]}, headers=admin)
        assert created.status_code == 200
        wait_until(lambda: _answered_by(served, "brand-new") == "a", message="new", timeout=10)
        bad = http.put("/v1/llm/routes/fast", json={"deployments": ["nope"]}, headers=admin)
        assert bad.status_code == 422 and "no deployment 'nope'" in bad.json()["message"]
        typo = http.put("/v1/llm/routes/fast", json={"deployment": ["a"]}, headers=admin)
        assert typo.status_code == 422 and "deployment" in typo.json()["message"]
        viewer = {"authorization": f"Bearer {served['viewer']}"}
        refused = http.put("/v1/llm/routes/fast", json={"deployments": ["a"]}, headers=viewer)
        assert refused.status_code == 403
        listed = http.get("/v1/llm/routes", headers=viewer).json()["routes"]
        assert {r["alias"] for r in listed} == {"fast", "brand-new"}
        one = http.get("/v1/llm/routes/fast", headers=viewer).json()
        assert one["deployments"] == ["b", "a"] and one["revision"] == 1
        assert http.get("/v1/llm/routes/nothing", headers=viewer).status_code == 404
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
    deleted = project.events.query(kind="llm.route_deleted", subject="fast").items
    assert deleted[0].payload["previous"]["deployments"] == ["b", "a"]


def test_a_change_is_conditional_on_the_revision_read_and_rolls_back(
    served: dict[str, Any],
) -> None:
    admin = {"authorization": f"Bearer {served['admin']}"}
    with httpx.Client(base_url=served["url"], timeout=10) as http:
        first = http.put(
            "/v1/llm/routes/via-a", json={"deployments": ["b"], "revision": 0}, headers=admin
        )
        assert first.status_code == 200 and first.json()["revision"] == 1
        again = http.put(
            "/v1/llm/routes/via-a", json={"deployments": ["a"], "revision": 0}, headers=admin
        )
        assert again.status_code == 409 and "is at 1, not 0" in again.json()["message"]
        second = http.put(
            "/v1/llm/routes/via-a",
            json={"deployments": ["a", "b"], "weights": {"a": 1}, "revision": 1, "reason": "a"},
            headers=admin,
        )
        assert second.status_code == 200 and second.json()["revision"] == 2
        wait_until(lambda: _answered_by(served, "via-a") == "a", message="via-a -> a", timeout=10)
        back = http.post("/v1/llm/routes/via-a/rollback", json={}, headers=admin)
        assert back.status_code == 200, back.text
        assert back.json()["deployments"] == ["b"] and back.json()["revision"] == 3
        assert back.json()["reason"] == "rollback to revision 1"
        wait_until(lambda: _answered_by(served, "via-a") == "b", message="rolled back", timeout=10)
        history = http.get("/v1/llm/routes/via-a/history", headers=admin).json()["history"]
        assert [h["revision"] for h in history] == [3, 2, 1]
        assert history[1]["reason"] == "a" and history[1]["weights"] == {"a": 1.0}
        assert http.delete("/v1/llm/routes/via-a", headers=admin).status_code == 200
        # Nothing before: a rollback of an alias with no stored route is a 404.
        assert http.post("/v1/llm/routes/via-a/rollback", headers=admin).status_code == 404


def test_rules_travel_with_a_stored_route(served: dict[str, Any]) -> None:
    admin = {"authorization": f"Bearer {served['admin']}"}
    rules = [{"name": "research", "when": {"teams": ["research"]}, "to": "lonely"}]
    with httpx.Client(base_url=served["url"], timeout=10) as http:
        done = http.put(
            "/v1/llm/routes/via-flaky",
            json={"deployments": ["b"], "rules": rules},
            headers=admin,
        )
        assert done.status_code == 200, done.text
        assert done.json()["rules"] == rules
        wait_until(
            lambda: _answered_by(served, "via-flaky", {"x-conveyor-team": "research"}) == "alone",
            message="the research team -> lonely's deployment",
            timeout=10,
        )
        assert _answered_by(served, "via-flaky", {"x-conveyor-team": "sales"}) == "b"
        loop = [{"when": {"tiers": ["gold"]}, "to": "via-flaky"}]
        bad = http.put(
            "/v1/llm/routes/via-flaky", json={"deployments": ["b"], "rules": loop}, headers=admin
        )
        assert bad.status_code == 422 and "the alias itself" in bad.json()["message"]
        nowhere = [{"when": {}, "to": "nothing"}]
        bad = http.put(
            "/v1/llm/routes/via-flaky", json={"deployments": ["b"], "rules": nowhere}, headers=admin
        )
        assert bad.status_code == 422 and "'nothing', not an alias" in bad.json()["message"]
        both = [{"when": {}, "to": "fast", "deployments": ["a"]}]
        bad = http.put(
            "/v1/llm/routes/via-flaky", json={"deployments": ["b"], "rules": both}, headers=admin
        )
        assert bad.status_code == 422 and "rules.0" in bad.json()["message"]
        assert http.delete("/v1/llm/routes/via-flaky", headers=admin).status_code == 200


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
    ruled = runner.invoke(
        llm_app,
        ["route", "set", "split", "--to", "b", "--reason", "gold to a", "-C", root,
         "--rules", "- {name: gold, when: {tiers: [gold]}, deployments: [a]}"],
        env=env,
    )  # fmt: skip
    assert ruled.exit_code == 0, ruled.output
    assert "gold: {'tiers': ['gold']} -> a" in ruled.output and "r2" in ruled.output
    wait_until(lambda: _answered_by(served, "split") == "b", message="split -> b", timeout=10)
    assert _answered_by(served, "split", {"x-conveyor-tier": "gold"}) == "a"
    one = runner.invoke(llm_app, ["route", "show", "split", "--json", "-C", root], env=env)
    assert json.loads(one.stdout)["rules"][0]["name"] == "gold"
    history = runner.invoke(llm_app, ["route", "history", "split", "--json", "-C", root], env=env)
    assert [r["revision"] for r in json.loads(history.stdout)["items"]] == [2, 1]
    back = runner.invoke(llm_app, ["route", "rollback", "split", "-C", root], env=env)
    assert back.exit_code == 0 and "r3" in back.output and "weights a=1, b=0" in back.output
    bad_rules = runner.invoke(
        llm_app, ["route", "set", "split", "--to", "a", "--rules", "{}", "-C", root], env=env
    )
    assert bad_rules.exit_code != 0 and "a list of rules" in bad_rules.output
    gone = runner.invoke(llm_app, ["route", "delete", "split", "-C", root], env=env)
    assert gone.exit_code == 0, gone.output
