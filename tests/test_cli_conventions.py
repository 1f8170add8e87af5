"""What every command shares, checked across all of them on one real project (SQLite).

- ``--json`` on a list prints ``{"items": [...], "next_cursor": ...}``; on one
  object, the object; on an error, ``{"error": {...}}``;
- exit codes: 0 done, 1 error, 3 a check failed;
- with API keys, every mutation records ``key:NAME`` (through ``common.authorized``).
"""

from __future__ import annotations

import ast
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest
from typer.testing import CliRunner

from conveyor.cli import app
from conveyor.project import Project, init_project

SPEC = """
slos:
  quality: {metric: roc_auc, floor: 0.7, direction: maximize}
datasets:
  loans:
    expectations:
      - {kind: not_null, column: income}
      - {kind: between, column: income, min: 0, max: 1000}
models:
  risk:
    train: cli_trainer:fit
    dataset: loans
    features: [income, debt]
    target: default
    holdout: {by: random, fraction: 0.25}
    gates:
      - metric_floor: {}
"""

TRAINER = """
from sklearn.linear_model import LogisticRegression


def fit(X, y, *, seed, sabotage=False):
    if sabotage:  # learns the labels inverted: the quality gate fails
        y = 1 - y
    return LogisticRegression().fit(X, y)
"""

FLOWS = textwrap.dedent(
    """
    from conveyor.pipelines import Pipeline

    tiny = Pipeline("tiny")

    @tiny.step
    def only(ctx):
        return None
    """
)


def loans(n: int, seed: int, *, shift: float = 0.0, bad: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    income = rng.normal(50, 15, n)
    debt = rng.normal(20, 8, n)
    logit = -0.1 * (income - 50) + 0.2 * (debt - 20)
    default = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    income, debt = income + shift, debt + shift
    income[:bad] = -5.0  # outside [0, 1000]: quarantined
    return pa.table({"income": income, "debt": debt, "default": default})


class Cli:
    """The real command line, in-process, on one project, as the holder of one API key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key: str | None = None

    def __call__(self, *args: str, key: str | None = "default") -> tuple[int, str, str]:
        token = self.key if key == "default" else key
        env = {"CONVEYOR_API_KEY": token} if token else {"CONVEYOR_API_KEY": ""}
        result = CliRunner().invoke(app, [*args, "-C", str(self.root)], env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    def json(self, *args: str, code: int = 0) -> Any:
        got, out, err = self(*args, "--json")
        assert got == code, (args, out, err)
        return json.loads(out)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    root = tmp_path_factory.mktemp("conventions")
    with pytest.MonkeyPatch.context() as patch:
        for var in ("CONVEYOR_STORE", "CONVEYOR_ARTIFACTS", "CONVEYOR_EVENTS", "CONVEYOR_API_KEY"):
            patch.delenv(var, raising=False)
        patch.chdir(root)  # pipeline files are found from the current folder
        init_project(root, name="conventions")
        with (root / "conveyor.yaml").open("a") as f:
            f.write(SPEC)
        (root / "cli_trainer.py").write_text(TRAINER)
        (root / "flows.py").write_text(FLOWS)
        with Project.open(root) as proj:
            proj.data.ingest("loans", loans(800, seed=1, bad=3))  # loans@1, 3 rows quarantined
            proj.data.ingest("loans", loans(800, seed=2, shift=40))  # loans@2: drifted
        pcsv.write_csv(loans(50, seed=3), root / "good.csv")
        pcsv.write_csv(loans(50, seed=4, bad=5), root / "bad.csv")
        run = Cli(root)
        assert run("train", "risk", "--seed", "1")[0] == 0  # risk@1 passes its gates
        assert run("train", "risk", "--seed", "1", "--param", "sabotage=true")[0] == 3  # risk@2
        assert run("deploy", "risk@1")[0] == 0
        for _ in range(2):
            assert run("pipeline", "run", "flows.py:tiny")[0] == 0
        code, out, _ = run("keys", "create", "boss", "--role", "admin", "--json")
        assert code == 0, out
        run.key = json.loads(out)["token"]  # from now on every command needs a key
        yield run


def quarantine_batch(cli: Cli) -> str:
    batch_id: str = cli.json("data", "quarantine", "list")["items"][0]["id"]
    return batch_id


# Every command that prints a list, and how many items it has at least here.
LISTS: list[tuple[tuple[str, ...], int]] = [
    (("events", "tail"), 10),
    (("runs", "list"), 4),
    (("reports", "list"), 3),
    (("keys", "list"), 1),
    (("models", "list"), 2),
    (("models", "history", "risk"), 1),
    (("data", "versions"), 2),
    (("data", "quarantine", "list"), 1),
    (("data", "quarantine", "show", "{batch}"), 3),
    (("pipeline", "list", "flows.py"), 1),
    (("pipeline", "list"), 2),
    (("pipeline", "history", "tiny"), 2),
    (("pipeline", "recover"), 0),
    (("route", "list"), 1),
    (("route", "history", "risk"), 1),
]


@pytest.mark.parametrize(("args", "at_least"), LISTS, ids=[" ".join(a) for a, _ in LISTS])
def test_every_list_prints_the_one_envelope(cli: Cli, args: tuple[str, ...], at_least: int) -> None:
    if "{batch}" in args:
        args = tuple(quarantine_batch(cli) if a == "{batch}" else a for a in args)
    body = cli.json(*args)
    assert isinstance(body, dict) and set(body) == {"items", "next_cursor"}, body
    assert isinstance(body["items"], list) and len(body["items"]) >= at_least, body
    assert body["next_cursor"] is None or isinstance(body["next_cursor"], str)
    assert all(isinstance(item, dict) for item in body["items"])


PAGED = [
    ("runs", "list"),
    ("reports", "list"),
    ("models", "list"),
    ("data", "versions"),
    ("pipeline", "list"),
    ("pipeline", "history", "tiny"),
]


@pytest.mark.parametrize("args", PAGED, ids=[" ".join(a) for a in PAGED])
def test_next_cursor_fetches_the_next_page(cli: Cli, args: tuple[str, ...]) -> None:
    first = cli.json(*args, "--limit", "1")
    assert len(first["items"]) == 1 and isinstance(first["next_cursor"], str)
    second = cli.json(*args, "--limit", "1", "--cursor", first["next_cursor"])
    assert len(second["items"]) == 1 and second["items"] != first["items"]
    code, out, _ = cli(*args, "--limit", "1")  # the table says how to get more
    assert code == 0 and f"--cursor {first['next_cursor']}" in out


def test_one_object_prints_the_object_and_errors_their_json(cli: Cli) -> None:
    run_id = cli.json("runs", "list")["items"][0]["id"]
    report_id = cli.json("reports", "list")["items"][0]["id"]
    for args, key in [
        (("runs", "show", run_id), "status"),
        (("reports", "show", report_id), "checks"),
        (("models", "show", "risk@1"), "signature"),
        (("route", "show", "risk"), "policy"),
        (("data", "profile", "loans@1"), "columns"),
        (("doctor",), "seams"),
    ]:
        body = cli.json(*args)
        assert isinstance(body, dict) and key in body and "items" not in body, (args, body)
    for args in (("runs", "show", "f" * 32), ("models", "show", "risk@9"), ("keys", "revoke", "x")):
        body = cli.json(*args, code=1)
        assert set(body) == {"error"} and body["error"]["code"] == "not_found", body


def test_runs_show_gives_params_metrics_artifacts_parent_and_steps(cli: Cli) -> None:
    [pipeline_run] = cli.json("pipeline", "history", "tiny", "--limit", "1")["items"]
    shown = cli.json("runs", "show", pipeline_run["id"])
    assert shown["kind"] == "pipeline" and shown["status"] == "succeeded"
    assert shown["parent"] is None
    [step] = shown["steps"]
    assert step["name"] == "only" and step["parent_id"] == shown["id"]
    child = cli.json("runs", "show", step["id"])
    assert child["parent"]["id"] == shown["id"] and child["steps"] == []

    version = cli.json("models", "show", "risk@1")
    trained = cli.json("runs", "show", version["run_id"])
    assert trained["status"] == "succeeded" and trained["error"] is None
    for key in ("params", "metrics", "tags", "artifacts"):
        assert isinstance(trained[key], dict), key
    assert trained["metrics"]
    code, out, _ = cli("runs", "show", version["run_id"])
    assert code == 0 and version["run_id"] in out and "metrics:" in out


BAD, GOOD = ("--file", "bad.csv"), ("--file", "good.csv")
SABOTAGE = ("--param", "sabotage=true")
CHECKS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("data", "validate", "loans", *BAD), ("data", "validate", "loans", *GOOD)),
    (("data", "drift", "loans@1", "loans@2"), ("data", "drift", "loans@1", "loans@1")),
    (("train", "risk", "--seed", "2", *SABOTAGE), ("train", "risk", "--seed", "2")),
    (("models", "gates", "risk@2"), ("models", "gates", "risk@1")),
]


@pytest.mark.parametrize(("failing", "passing"), CHECKS, ids=[f[1] for f, _ in CHECKS])
def test_a_failed_check_exits_3_and_a_passed_one_0(
    cli: Cli, failing: tuple[str, ...], passing: tuple[str, ...]
) -> None:
    code, out, err = cli(*failing)
    assert code == 3, out + err
    assert "FAIL" in out and "Traceback" not in err
    body = cli.json(*failing, code=3)  # the report (or candidate) still prints as JSON
    assert "error" not in body
    assert cli(*passing)[0] == 0


def test_mutations_record_the_key_and_need_one(cli: Cli) -> None:
    code, _, err = cli("data", "ingest", "loans", "--file", "good.csv", key=None)
    assert code == 1 and "CONVEYOR_API_KEY" in err
    assert cli("data", "ingest", "loans", "--file", "good.csv")[0] == 0
    assert cli("data", "drift", "loans@1", "loans@2")[0] == 3
    batch = quarantine_batch(cli)
    assert cli("data", "quarantine", "discard", batch, "--reason", "test data")[0] == 0
    with Project.open(cli.root) as proj:
        for kind in (
            "data.extracted",
            "data.version_created",
            "data.read",
            "data.drift",
            "drift.detected",
            "data.quarantine_discarded",
        ):
            [event] = proj.events.latest(1, kind=kind)
            assert event.actor == "key:boss", (kind, event.actor)


CLI_SOURCES = sorted((Path(__file__).parents[1] / "src" / "conveyor" / "cli").glob("*.py"))


@pytest.mark.parametrize("path", CLI_SOURCES, ids=[p.name for p in CLI_SOURCES])
def test_no_command_builds_its_own_actor(path: Path) -> None:
    """Every ``actor=`` a command passes comes from ``authorized()`` (directly or by a name
    bound to its result), so ``CONVEYOR_API_KEY`` is always recorded as ``key:NAME``."""
    tree = ast.parse(path.read_text())
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef):
            continue
        bound = {
            target.id
            for node in ast.walk(func)
            if isinstance(node, ast.Assign) and _calls_authorized(node.value)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(func):
            if isinstance(node, ast.keyword) and node.arg == "actor":
                value = node.value
                ok = _calls_authorized(value) or (isinstance(value, ast.Name) and value.id in bound)
                assert ok, f"{path.name}:{node.value.lineno}: actor={ast.unparse(value)}"
    assert "cli:" not in path.read_text() or path.name == "common.py"


def _calls_authorized(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "authorized"
    )
