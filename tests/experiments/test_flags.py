"""Feature flags over a real store: each change is one route revision through the
RouteStore, the router sends the targeted cohort to the flag's version, the kill switch
takes the rule off at once, and every change is in the history and the audit log.
Plus the ``conveyor flag`` and ``conveyor experiment`` commands in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from experiment_support import make_project
from typer.testing import CliRunner

from conveyor.errors import AlreadyExistsError, InvalidInputError, NotFoundError
from conveyor.project import Project
from conveyor.serving.route_store import RouteStore
from conveyor.serving.routes import decide


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with make_project(tmp_path) as proj:
        yield proj


@pytest.fixture(params=["sqlite", "postgresql"])
def any_project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    """The project on SQLite, and with its store and event log on PostgreSQL."""
    if request.param == "sqlite":
        with make_project(tmp_path) as proj:
            yield proj
        return
    pg_url = request.getfixturevalue("pg_url")
    with make_project(tmp_path, env={"CONVEYOR_STORE": pg_url, "CONVEYOR_EVENTS": pg_url}) as proj:
        yield proj


def _share_to(project: Project, version: int, attributes: dict[str, str]) -> float:
    policy = RouteStore(project.store, None).get("m").policy
    hits = sum(
        decide(policy, model="m", key=f"user-{i}", attributes=attributes).version == version
        for i in range(2000)
    )
    return hits / 2000


def test_create_target_ramp_kill_delete(any_project: Project) -> None:
    project = any_project
    flags = project.flags
    routes = RouteStore(project.store, None)
    start = routes.get("m").revision
    flags.create("m", "beta", version=3, match="group=beta", percent=0, actor="ana")
    assert routes.get("m").revision == start + 1
    assert _share_to(project, 3, {"group": "beta"}) == 0.0
    flags.ramp("m", "beta", 25, actor="ana", reason="first quarter")
    assert 0.21 < _share_to(project, 3, {"group": "beta"}) < 0.29
    assert _share_to(project, 3, {"group": "staff"}) == 0.0
    flags.target("m", "beta", {"group": "staff"}, actor="bob")
    assert 0.21 < _share_to(project, 3, {"group": "staff"}) < 0.29
    assert _share_to(project, 3, {"group": "beta"}) == 0.0

    before = routes.get("m").revision
    killed = flags.kill("m", "beta", actor="ops", reason="p99 up")
    assert killed["state"] == "killed"
    assert routes.get("m").revision == before + 1  # one revision: instant
    assert routes.get("m").policy.flags == []
    assert _share_to(project, 3, {"group": "staff"}) == 0.0
    again = flags.ramp("m", "beta", 10, actor="ana")
    assert again["state"] == "on" and again["percent"] == 10.0
    assert [f.name for f in routes.get("m").policy.flags] == ["beta"]

    shown = flags.show("m", "beta")
    assert [h["action"] for h in shown["history"]] == ["ramp", "kill", "target", "ramp", "create"]
    assert shown["history"][1]["actor"] == "ops" and shown["history"][1]["reason"] == "p99 up"
    assert shown["history"][2]["flag"]["match"] == {"group": "staff"}

    flags.delete("m", "beta", actor="ana")
    assert flags.list("m") == []
    assert routes.get("m").policy.flags == []
    with pytest.raises(NotFoundError):
        flags.show("m", "beta")
    kinds = [e.kind for e in project.events.iter(subject="m") if e.kind.startswith("flag.")]
    assert kinds == [
        "flag.created",
        "flag.changed",
        "flag.changed",
        "flag.killed",
        "flag.changed",
        "flag.deleted",
    ]


def test_refusals(project: Project) -> None:
    flags = project.flags
    with pytest.raises(NotFoundError):
        flags.create("m", "x", version=9, actor="ana")
    with pytest.raises(NotFoundError):
        flags.create("other", "x", version=1, actor="ana")
    with pytest.raises(InvalidInputError):
        flags.create("m", "x", version=2, percent=120, actor="ana")
    with pytest.raises(InvalidInputError):
        flags.create("m", "bad name!", version=2, actor="ana")
    with pytest.raises(InvalidInputError):
        flags.create("m", "x", version=2, match="group", actor="ana")
    flags.create("m", "x", version=2, actor="ana")
    with pytest.raises(AlreadyExistsError):
        flags.create("m", "x", version=3, actor="ana")
    with pytest.raises(NotFoundError):
        flags.ramp("m", "nope", 5, actor="ana")


def _cli(root: Path, *args: str) -> tuple[int, str]:
    from conveyor.cli import app

    done = CliRunner().invoke(app, [*args, "-C", str(root)], env={})
    return done.exit_code, done.output


def test_cli_verbs(tmp_path: Path) -> None:
    make_project(tmp_path).close()
    code, out = _cli(
        tmp_path,
        "experiment",
        "start",
        "exp",
        "m",
        "--arms",
        "control=1,treatment=2",
        "--metric",
        "conversion",
        "--baseline",
        "0.1",
        "--mde",
        "0.02",
        "--guardrail",
        "error_rate",
        "--json",
    )
    assert code == 0, out
    assert json.loads(out)["design"]["planned_n"] == 4103
    code, out = _cli(
        tmp_path,
        "experiment",
        "start",
        "e2",
        "m",
        "--arms",
        "a=1,b=8",
        "--metric",
        "conversion",
        "--baseline",
        "0.1",
        "--mde",
        "0.02",
    )
    assert code == 1 and "m@8" in out
    code, out = _cli(tmp_path, "experiment", "report", "exp")
    assert code == 0 and "recommendation: KEEP RUNNING" in out, out
    code, out = _cli(tmp_path, "experiment", "status", "--json")
    assert (
        code == 0 and json.loads(out)["items"][0]["last_report"]["recommendation"] == "keep running"
    )
    code, out = _cli(tmp_path, "experiment", "stop", "exp", "--winner", "treatment")
    assert code == 0 and "stopped" in out

    code, out = _cli(
        tmp_path,
        "flag",
        "create",
        "m",
        "beta",
        "--version",
        "3",
        "--match",
        "group=beta",
        "--percent",
        "5",
    )
    assert code == 0 and "5 % of group=beta -> version 3" in out, out
    assert _cli(tmp_path, "flag", "ramp", "m", "beta", "50")[0] == 0
    assert _cli(tmp_path, "flag", "kill", "m", "beta", "--reason", "oops")[0] == 0
    code, out = _cli(tmp_path, "flag", "show", "m", "beta", "--json")
    assert code == 0 and [h["action"] for h in json.loads(out)["history"]] == [
        "kill",
        "ramp",
        "create",
    ]
    code, out = _cli(tmp_path, "flag", "list")
    assert code == 0 and "killed" in out
    assert _cli(tmp_path, "flag", "delete", "m", "beta")[0] == 0
