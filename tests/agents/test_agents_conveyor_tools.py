"""Conveyor's own operations as MCP tools (the built-in server ``conveyor``), called
through the served gateway with the official ``mcp`` client: models, versions, a
comparison and a gate report read by a predictor (the endpoint needs one); deploy, canary
and rollback by a deployer and refused to a predictor naming the role they need; every
route change recorded with the agent's key as its actor, as ``conveyor rollback`` records
it; bad arguments refused with the path of the bad field; an unknown model a clear
error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from conveyor.governance.keys import ApiKeys
from conveyor.project import Project, init_project
from conveyor.serving.app import create_app
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import RoutePolicy
from conveyor.serving.server import ThreadedServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root: Path = tmp_path_factory.mktemp("mcptools")
    init_project(root, name="mcptools")
    project = Project.open(root, env={})
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
    for scale, r2 in ((1.0, 0.91), (2.0, 0.95)):
        project.registry.register(
            "m",
            LinearRegression().fit(X, scale * X.sum(axis=1)),
            signature_from=X,
            metrics={"r2": r2},
        )
    RouteStore(project.store, project.events, project.registry).set("m", RoutePolicy.fixed(1))
    keys = ApiKeys(project.store, project.events)
    tokens = {role: keys.create(f"agent-{role}", role)[0] for role in ("predictor", "deployer")}
    running = ThreadedServer(create_app(project))
    running.start()
    try:
        yield {"url": running.url, "project": project, **tokens}
    finally:
        running.stop()
        project.close()


def _call(served: dict[str, Any], role: str, tool: str, arguments: dict[str, Any]) -> Any:
    """The tool's JSON answer, or the MCPError it raised."""
    import httpx2
    from mcp import Client, MCPError
    from mcp.client.streamable_http import streamable_http_client

    async def main() -> Any:
        headers = {"authorization": f"Bearer {served[role]}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(f"{served['url']}/mcp", http_client=http)) as client,
        ):
            try:
                result = await client.call_tool(f"conveyor__{tool}", arguments)
            except MCPError as exc:
                return exc
            return json.loads(result.content[0].text)

    return asyncio.run(main())


def test_an_agent_reads_models_versions_and_comparisons(served: dict[str, Any]) -> None:
    models = _call(served, "predictor", "list_models", {})
    (m,) = models["models"]
    assert m["name"] == "m" and m["latest_version"] == 2
    assert m["route"]["versions"] == [{"version": 1, "weight": 100.0, "arm": "stable"}] or (
        m["route"]["versions"][0]["version"] == 1
    )
    versions = _call(served, "predictor", "list_versions", {"model": "m"})
    assert [v["number"] for v in versions["versions"]] == [2, 1]
    compared = _call(served, "predictor", "compare_versions", {"model": "m", "a": 1, "b": 2})
    assert compared["metrics"] == [{"metric": "r2", "a": 0.91, "b": 0.95, "b_minus_a": 0.04}]
    report = _call(served, "predictor", "gate_report", {"model": "m", "version": 2})
    assert report["report"] is None and "never ran" in report["note"]
    alerts = _call(served, "predictor", "list_alerts", {})
    assert alerts == {"alerts": []}


def test_a_deployer_acts_a_predictor_is_refused(served: dict[str, Any]) -> None:
    refused = _call(served, "predictor", "rollback", {"model": "m"})
    assert refused.data["code"] == "forbidden" and refused.data["required_role"] == "deployer"
    assert "'agent-predictor' has 'predictor'" in refused.message
    canary = _call(served, "deployer", "canary", {"model": "m", "version": 2, "percent": 10})
    arms = {a["version"]: a["weight"] for a in canary["canary"]["policy"]["versions"]}
    assert arms == {1: 90.0, 2: 10.0}
    rolled = _call(served, "deployer", "rollback", {"model": "m", "reason": "canary errors"})
    back = rolled["rolled_back"]
    assert [a["version"] for a in back["policy"]["versions"]] == [1]
    assert back["actor"] == "key:agent-deployer" and back["reason"].endswith("canary errors")
    project: Project = served["project"]
    history = RouteStore(project.store, project.events, project.registry).history("m")
    assert history[0].actor == "key:agent-deployer"  # recorded as anyone's change is


def test_bad_arguments_and_unknown_models(served: dict[str, Any]) -> None:
    bad = _call(served, "deployer", "canary", {"model": "m", "version": 2, "percent": 150})
    assert bad.data["code"] == "invalid_arguments" and bad.data["path"] == "percent"
    extra = _call(served, "predictor", "list_models", {"surprise": 1})
    assert extra.data["code"] == "invalid_arguments"
    missing = _call(served, "predictor", "list_versions", {"model": "nope"})
    assert missing.data["code"] == "not_found" and "'nope'" in missing.message
