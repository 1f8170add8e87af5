"""The CLI (in-process) and the HTTP routes (a real server) of rollouts: every verb,
JSON output, and errors as typed exceptions / JSON with a stable code."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from rollout_support import make_project
from typer.testing import CliRunner

from conveyor.governance.keys import ApiKeys
from conveyor.serving.app import create_app
from conveyor.serving.server import ThreadedServer


def _cli(root: Path, *args: str) -> tuple[int, str]:
    from conveyor.cli import app

    done = CliRunner().invoke(app, ["rollout", *args, "-C", str(root)], env={})
    return done.exit_code, done.output


def test_cli_verbs(tmp_path: Path) -> None:
    make_project(tmp_path).close()
    code, out = _cli(tmp_path, "start", "m@3", "--steps", "10,100", "--json")
    assert code == 1 and "failed its gates" in out
    code, out = _cli(
        tmp_path,
        "start",
        "m@3",
        "--steps",
        "10,100",
        "--interval",
        "1m",
        "--force",
        "--reason",
        "hotfix",
        "--json",
    )
    assert code == 0, out
    started = json.loads(out)
    assert started["steps"] == ["10%", "100%"] and started["force_reason"] == "hotfix"
    code, out = _cli(tmp_path, "start", "m@2")
    assert code == 1 and started["id"] in out
    code, out = _cli(tmp_path, "run", "--once")
    assert code == 0 and "applied (10%)" in out
    code, out = _cli(tmp_path, "pause", "m")
    assert code == 0 and "paused" in out
    code, out = _cli(tmp_path, "resume", "m", "--json")
    assert code == 0 and json.loads(out)["status"] == "running"
    code, out = _cli(tmp_path, "abort", "m", "--reason", "not today")
    assert code == 0 and "aborted" in out and "not today" in out
    code, out = _cli(tmp_path, "status", "--json")
    assert code == 0 and [r["status"] for r in json.loads(out)["items"]] == ["aborted"]
    code, out = _cli(tmp_path, "status", "nope")
    assert code == 1 and "no rollout 'nope'" in out
    code, out = _cli(tmp_path, "start", "m2")
    assert code == 1 and "MODEL@VERSION" in out


def test_http_verbs_and_errors(tmp_path: Path) -> None:
    with make_project(tmp_path) as project:
        token = ApiKeys(project.store, project.events).create("ops", "deployer")[0]
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            with httpx.Client(base_url=server.url, headers={"x-api-key": token}) as c:
                gated = c.post("/v1/rollouts", json={"model": "m", "version": 3})
                assert gated.status_code == 409, gated.text
                assert gated.json()["code"] == "gate_failed"
                assert gated.json()["failed"] == ["accuracy"]
                bad = c.post("/v1/rollouts", json={"model": "m", "version": 2, "steps": "5,50"})
                assert bad.status_code == 422
                assert bad.json()["code"] == "invalid_input" and bad.json()["field"] == "steps"
                unknown = c.post("/v1/rollouts", json={"model": "m", "version": 2, "x": 1})
                assert unknown.status_code == 422
                started = c.post("/v1/rollouts", json={"model": "m", "version": 2})
                assert started.status_code == 201
                ref = started.json()["id"]
                assert (
                    c.post(f"/v1/rollouts/{ref}/pause", json={"reason": "look"}).json()["status"]
                    == "paused"
                )
                assert c.post(f"/v1/rollouts/{ref}/resume").json()["status"] == "running"
                promoted = c.post(f"/v1/rollouts/{ref}/promote")
                assert promoted.status_code == 200 and promoted.json()["status"] == "promoted"
                again = c.post(f"/v1/rollouts/{ref}/abort")
                assert again.status_code == 409 and again.json()["code"] == "conflict"
                assert c.get("/v1/rollouts/nope").status_code == 404
                assert project.registry.aliases("m")["champion"] == 2
        finally:
            server.stop()


def test_status_wait_exits_by_the_rollouts_outcome(tmp_path: Path) -> None:
    """What a pipeline waits on: 1 still running, 3 rolled back or aborted, 0 promoted."""
    make_project(tmp_path).close()
    code, out = _cli(tmp_path, "start", "m@2", "--steps", "10,100", "--interval", "1h")
    assert code == 0, out
    code, out = _cli(tmp_path, "status", "m", "--wait", "1s", "--poll", "0.2")
    assert code == 1 and "still running after 1s" in out
    code, out = _cli(tmp_path, "abort", "m", "--reason", "red dashboard")
    assert code == 0
    code, out = _cli(tmp_path, "status", "m", "--wait", "1m", "--json")
    assert code == 3 and json.loads(out)["status"] == "aborted"
    code, out = _cli(tmp_path, "start", "m@2", "--steps", "10,100", "--interval", "1h")
    assert code == 0, out
    code, out = _cli(tmp_path, "promote", "m")
    assert code == 0, out
    code, out = _cli(tmp_path, "status", "m", "--wait", "1m", "--json")
    assert code == 0 and json.loads(out)["status"] == "promoted"
    code, out = _cli(tmp_path, "status", "--wait", "1m")
    assert code == 1 and "--wait needs a rollout id or a model" in out
