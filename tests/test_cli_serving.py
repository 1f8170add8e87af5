"""``conveyor deploy / route / rollback`` on a real project (SQLite), plus one real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from conveyor.cli import app
from conveyor.project import Project, init_project


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from sklearn.linear_model import LogisticRegression

    for var in ("CONVEYOR_STORE", "CONVEYOR_ARTIFACTS", "CONVEYOR_EVENTS"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "p"
    init_project(root, name="serving-test")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(int)
    with Project.open(root) as proj:
        for c in (0.1, 1.0, 10.0, 100.0):  # fraud@1..4
            proj.registry.register("fraud", LogisticRegression(C=c).fit(x, y))
        proj.registry.set_alias("fraud", "blue", 2, actor="test")
    monkeypatch.chdir(root)
    return root


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def as_json(*args: str) -> Any:
    code, out = cli(*args, "--json")
    assert code == 0, out
    return json.loads(out)


def arms(state: dict[str, Any]) -> list[tuple[int, float, str | None]]:
    return [(a["version"], a["weight"], a["arm"]) for a in state["policy"]["versions"]]


def test_deploy_canary_show_history_and_rollback(project: Path) -> None:
    code, out = cli("deploy", "fraud@1", "--reason", "first")
    assert code == 0, out
    assert "deployed fraud revision 1: fixed: v1" in out

    code, out = cli("deploy", "fraud@blue", "--canary", "10", "--sticky-header", "x-user-id")
    assert code == 0, out
    assert "revision 2: canary: stable v1 90% | canary v2 10%" in out
    shown = as_json("route", "show", "fraud")
    assert shown["revision"] == 2 and arms(shown) == [(1, 90.0, "stable"), (2, 10.0, "canary")]
    assert shown["policy"]["sticky_header"] == "x-user-id"
    assert shown["actor"].startswith("cli")

    # A bigger canary of another version keeps the stable arm and the sticky header.
    state = as_json("deploy", "fraud@3", "--canary", "25", "--shadow", "4")
    assert arms(state) == [(1, 75.0, "stable"), (3, 25.0, "canary")]
    assert state["policy"]["shadow"] == [4] and state["policy"]["sticky_header"] == "x-user-id"

    code, out = cli("route", "show", "fraud")
    assert code == 0, out
    assert "revision 3 (canary)" in out and "shadow" in out and "x-user-id" in out

    code, out = cli("rollback", "fraud", "--reason", "p99 up")
    assert code == 0, out
    assert "rolled back fraud revision 4: canary: stable v1 90% | canary v2 10%" in out

    history = as_json("route", "history", "fraud")["items"]
    assert [h["revision"] for h in history] == [4, 3, 2, 1]
    assert history[0]["reason"] == "rollback to revision 2: p99 up"
    assert history[-1]["reason"] == "first"
    code, out = cli("route", "history", "fraud")
    assert code == 0 and "rollback to revision 2" in out

    listed = as_json("route", "list")
    assert listed["next_cursor"] is None
    assert [(r["model"], r["revision"]) for r in listed["items"]] == [("fraud", 4)]

    # Every change is an audit event.
    code, out = cli("events", "tail", "--kind", "route.*", "--json")
    assert code == 0, out
    kinds = [e["kind"] for e in json.loads(out)["items"]]
    assert kinds.count("route.set") == 3 and kinds.count("route.rolled_back") == 1


def test_route_set_from_a_file_and_from_policy_text(project: Path) -> None:
    policy = {
        "mode": "ab",
        "versions": [{"version": 1, "arm": "a"}, {"version": 2, "arm": "b"}],
        "sticky_header": "x-user-id",
        "flags": [{"name": "beta", "match": {"tier": "beta"}, "version": 3}],
    }
    (project / "policy.json").write_text(json.dumps(policy))
    code, out = cli("route", "set", "fraud", "--policy-file", "policy.json", "--reason", "ab test")
    assert code == 0, out
    assert "set fraud revision 1: ab: a v1 50% | b v2 50%; flags beta->v3" in out
    state = as_json(
        "route", "set", "fraud", "--policy", '{"mode": "fixed", "versions": [{"version": 4}]}',
        "--expected-revision", "1",
    )  # fmt: skip  # --json selects the output, as everywhere
    assert state["revision"] == 2
    assert as_json("route", "show", "fraud")["policy"]["versions"] == [
        {"version": 4, "weight": 100.0, "arm": None}
    ]
    # A stale expected revision is refused, and the route is unchanged.
    code, out = cli(
        "route", "set", "fraud", "--policy", '{"mode": "fixed", "versions": [{"version": 1}]}',
        "--expected-revision", "1", "-f", "policy.json",
    )  # fmt: skip
    assert code == 1 and "--policy-file policy.json or as --policy" in out
    code, out = cli(
        "route", "set", "fraud", "--policy", '{"mode": "fixed", "versions": [{"version": 1}]}',
        "--expected-revision", "1",
    )  # fmt: skip
    assert code == 1 and "revision 2, not 1" in out
    assert as_json("route", "show", "fraud")["revision"] == 2


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["deploy", "fraud@9"], "no fraud@9"),
        (["deploy", "fraud@2", "--canary", "10"], "give --stable"),
        (["deploy", "fraud@2", "--stable", "1"], "--stable goes with --canary"),
        (["deploy", "fraud@2", "--canary", "150", "--stable", "1"], "between 0 and 100"),
        (["deploy", "fraud@2", "--canary", "10", "--stable", "2"], "against itself"),
        (["deploy", "fraud@2", "--shadow", "2"], "shadow[0]"),
        (["deploy", "fraud@2", "--shadow", "8"], "shadow[0] names version 8"),
        (["route", "show", "fraud"], "has no route"),
        (["route", "history", "fraud"], "never had a route"),
        (["rollback", "fraud"], "has no route"),
        (["route", "set", "fraud"], "--policy-file policy.json or as --policy"),
        (["route", "set", "fraud", "--policy-file", "missing.json"], "does not exist"),
        (["route", "set", "fraud", "--policy", "{nope"], "not JSON"),
        (["route", "set", "fraud", "--policy", '{"mode": "fixed", "versions": []}'], "versions"),
        (
            [
                "route",
                "set",
                "fraud",
                "--policy",
                '{"mode": "fixed", "versions": [{"version": 7}]}',
            ],
            "versions[0].version names version 7",
        ),
    ],
)
def test_bad_commands_fail_with_one_clear_line(project: Path, args: list[str], words: str) -> None:
    code, out = cli(*args)
    assert code == 1, out
    assert out.startswith("error: ") and words in out, out
    assert "Traceback" not in out


def test_rollback_with_nothing_before_and_errors_as_json(project: Path) -> None:
    assert cli("deploy", "fraud@1")[0] == 0
    code, out = cli("rollback", "fraud")
    assert code == 1 and "no revision before 1" in out
    code, out = cli("rollback", "fraud", "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "invalid_input"


def test_the_installed_script_deploys_and_shows(project: Path) -> None:
    conveyor = str(Path(sys.executable).with_name("conveyor"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [conveyor, *args], cwd=project, env=env, capture_output=True, text=True, timeout=120
        )

    deployed = run("deploy", "fraud@2", "--json")
    assert deployed.returncode == 0, deployed.stderr
    assert json.loads(deployed.stdout)["policy"]["versions"][0]["version"] == 2
    shown = run("route", "show", "fraud")
    assert shown.returncode == 0, shown.stderr
    assert "revision 1 (fixed)" in shown.stdout
    # The registry's alias rollback is still `conveyor models rollback`.
    assert "alias" in run("models", "rollback", "--help").stdout.lower()


# -- conveyor predict: the route decides, as on the server ----------------------------------

ROWS = '{"records": [{"x0": 0.5, "x1": 0.1, "x2": -0.2}]}'


@pytest.fixture
def scored(project: Path) -> Path:
    """``project`` where fraud@1..4 were trained on named columns x0, x1, x2, as a new user's
    models are: a frame in, predictions out."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    x = pd.DataFrame(rng.normal(size=(60, 3)), columns=["x0", "x1", "x2"])
    y = (x["x0"] > 0).astype(int)
    with Project.open(project) as proj:
        for c in (0.1, 1.0, 10.0, 100.0):  # fraud@5..8
            proj.registry.register("fraud", LogisticRegression(C=c).fit(x, y), signature_from=x)
    return project


def predicted(*args: str) -> tuple[dict[str, Any], str]:
    """The answer (stdout, JSON) and the line saying who answered (stderr)."""
    result = CliRunner().invoke(app, ["predict", *args, "-d", ROWS])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr.strip()


def test_predict_follows_the_route_and_says_which_version_answered(scored: Path) -> None:
    code, out = cli("predict", "fraud", "-d", ROWS)
    assert code == 1 and "model 'fraud' is not deployed" in out and "fraud@N" in out, out
    assert cli("deploy", "fraud@5")[0] == 0
    assert cli("models", "alias", "fraud", "blue", "6")[0] == 0
    # fraud@8 is the newest version; the route serves fraud@5.
    answer, said = predicted("fraud")
    assert (answer["version"], answer["arm"]) == (5, "v5")
    assert said == "fraud@5 answered (route revision 1, arm v5)"
    answer, said = predicted("fraud@blue")  # an alias picks explicitly
    assert answer["version"] == 6 and said == "fraud@6 answered (here, as fraud@blue)"
    answer, said = predicted("fraud@7")
    assert answer["version"] == 7 and said == "fraud@7 answered (here, named)"

    # A sticky canary: each user gets the arm the server's decision gives that user.
    from conveyor.serving.routes import RoutePolicy

    assert cli("deploy", "fraud@6", "--canary", "50", "--sticky-header", "x-user-id")[0] == 0
    with Project.open(scored) as proj:
        from conveyor.serving.route_store import RouteStore

        policy: RoutePolicy = RouteStore(proj.store, proj.events, proj.registry).get("fraud").policy
    seen = set()
    for user in ("ana", "bo", "cy", "di", "ed", "flo"):
        expected = policy.compiled().decide(model="fraud", key=user, attributes={})
        answer, said = predicted("fraud", "--sticky", user)
        assert (answer["version"], answer["arm"]) == (expected.version, expected.arm), user
        assert said.startswith(f"fraud@{expected.version} answered (route revision 2, arm ")
        seen.add(answer["version"])
    assert seen == {5, 6}, "both arms of a 50 % canary answer someone among six users"


def test_predict_against_a_stopped_server_is_one_line(project: Path) -> None:
    from conveyor.testing.ports import worker_port

    url = f"http://127.0.0.1:{worker_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    done = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "predict", "fraud", "--url", url, "-d", ROWS],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stderr.strip() == (
        f"error: cannot reach {url}: connection refused"
    ), done.stderr
