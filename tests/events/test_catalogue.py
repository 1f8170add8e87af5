"""Every event kind Conveyor writes is in the catalogue, written through it, and documented.

- no module of the package writes a literal kind (``.emit("kind", ...)`` or
  ``Event("kind", ...)``) outside the event log itself (``events/``) and the
  contract suites (``testing/``): code writes ``events.record(KIND, ...)``;
- every catalogued kind is well formed and declared once, and each capability's
  ``events`` are what the catalogue lists;
- real flows (an ingest, a training, a pipeline run, keys, a route, predictions
  through the server) store only catalogued kinds, with payloads their kind accepts;
- ``docs/events.md`` holds the catalogue's table; ``conveyor events kinds`` lists it.
"""

from __future__ import annotations

import ast
import json
import typing
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

import conveyor
from conveyor.capability import ENTRY_POINT_GROUP, EventKind, capabilities
from conveyor.events.catalogue import (
    FOUNDATION,
    FOUNDATION_KINDS,
    check_payload,
    declared_by,
    kind,
    kinds,
    markdown_table,
)
from conveyor.events.schema import check_kind
from conveyor.testing.wait import wait_until

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "src" / "conveyor"
EXEMPT = ("events", "testing")  # the log itself, and the contract suites' free kinds


# -- (a) no literal kind is written -------------------------------------------------------


def _literal_kind(call: ast.Call) -> str | None:
    """The kind a call writes if it is a literal: ``x.emit("kind", ...)``, ``Event("kind")``."""
    func = call.func
    writes = (isinstance(func, ast.Attribute) and func.attr in ("emit", "_emit")) or (
        isinstance(func, ast.Name) and func.id == "Event"
    )
    if not writes:
        return None
    first = call.args[0] if call.args else None
    for keyword in call.keywords:
        if keyword.arg == "kind":
            first = keyword.value
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


def _modules() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] not in EXEMPT:
            yield path


def test_no_module_writes_a_literal_kind() -> None:
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and (name := _literal_kind(node)) is not None:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name!r}")
    assert not found, "write these through their catalogued kind (events.record(KIND, ...)):\n" + (
        "\n".join(found)
    )


def test_the_scan_finds_what_it_looks_for() -> None:
    calls = [
        node
        for node in ast.walk(
            ast.parse(
                "log.emit('a.b', payload={})\nself._emit(kind='c.d')\nEvent('e.f')\n"
                "log.emit(KIND)\nlog.record('g.h')\nrunner.emit(STEP_STARTED, 'p', None, {})\n"
            )
        )
        if isinstance(node, ast.Call)
    ]
    assert [k for c in calls if (k := _literal_kind(c)) is not None] == ["a.b", "c.d", "e.f"]


# -- (b) the catalogue itself ---------------------------------------------------------------


def _field_type_ok(expected: object) -> bool:
    if expected is typing.Any:
        return True
    types = expected if isinstance(expected, tuple) else (expected,)
    return bool(types) and all(isinstance(t, type) for t in types)


def test_every_kind_is_well_formed() -> None:
    catalogue = kinds()
    assert len(catalogue) >= 37
    for name, event in catalogue.items():
        assert isinstance(event, EventKind) and event.name == name
        assert check_kind(name) == name
        assert event.durability in ("audit", "control", "telemetry"), name
        assert event.description.strip(), f"{name} has no description"
        assert all(_field_type_ok(t) for t in event.fields.values()), name
        assert event.optional <= set(event.fields), f"{name}: optional fields it does not have"
        assert kind(name) is event


def test_each_kind_is_declared_once_and_every_capabilitys_are_catalogued() -> None:
    declared = [k.name for k in FOUNDATION_KINDS] + [
        k.name for c in capabilities() for k in c.events
    ]
    twice = sorted({n for n in declared if declared.count(n) > 1})
    assert not twice, f"declared more than once: {twice}"
    catalogue = kinds()
    for declaration in capabilities():
        for event in declaration.events:
            assert catalogue[event.name] is event
            assert declared_by(event.name) == declaration.name
    for event in FOUNDATION_KINDS:
        assert declared_by(event.name) == FOUNDATION
    assert set(catalogue) == set(declared)


def test_each_of_conveyors_capabilities_declares_its_kinds_in_its_events_module() -> None:
    import importlib

    for declaration in capabilities():
        if declaration.name not in _conveyors_own():
            continue
        module = importlib.import_module(f"conveyor.{declaration.name}.events")
        constants = [value for value in vars(module).values() if isinstance(value, EventKind)]
        assert sorted(k.name for k in declaration.events) == sorted(k.name for k in constants)
        assert all(any(k is c for c in constants) for k in declaration.events), declaration.name
        assert declaration.events, f"{declaration.name} declares no event kind"


def test_durabilities_follow_what_each_kind_records() -> None:
    catalogue = kinds()
    telemetry = sorted(n for n, k in catalogue.items() if k.durability == "telemetry")
    assert telemetry == [
        "guardrail.decision",
        "llm.call",
        "mcp.call",
        "prediction",
        "prediction.failed",
        "prediction.shadow",
        "rag.query",
        "serving.sample",
    ]
    for name in (
        "auth.key_created",
        "auth.key_revoked",
        "model.alias_moved",
        "route.set",
        "route.rolled_back",
        "route.deleted",
        "data.forgotten",
        "data.key_rotated",
        "data.quarantine_discarded",
        "data.version_created",
        "data.read",
        "model.registered",
        "model.candidate",
        "model.optimized",
        "drift.detected",
        "run.finished",
        "pipeline.finished",
        "project.initialized",
    ):
        assert catalogue[name].durability == "audit", name
    for name in ("data.extracted", "data.validated", "data.drift", "model.validated", "run.metric"):
        assert catalogue[name].durability == "control", name


# -- (c) real flows write what the catalogue says ---------------------------------------------

SPEC = """
serving: {auth: disabled, poll_interval_s: 0.2}
datasets:
  loans:
    expectations:
      - {kind: between, column: income, min: 0, max: 1000}
models:
  risk:
    train: catalogue_trainer:fit
    dataset: loans
    features: [income, debt]
    target: default
    holdout: {by: random, fraction: 0.25}
    gates:
      - metric_floor: {}
slos:
  quality: {metric: roc_auc, floor: 0.5, direction: maximize}
"""

TRAINER = """
from sklearn.linear_model import LogisticRegression


def fit(X, y, *, seed):
    return LogisticRegression().fit(X, y)
"""


def _loans(n: int, seed: int, *, bad: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    income = rng.normal(50, 15, n)
    debt = rng.normal(20, 8, n)
    logit = -0.1 * (income - 50) + 0.2 * (debt - 20)
    default = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    income[:bad] = -5.0  # outside [0, 1000]: quarantined
    return pa.table({"income": income, "debt": debt, "default": default})


def test_real_flows_store_only_catalogued_kinds_with_valid_payloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.governance.keys import ApiKeys
    from conveyor.pipelines import LocalRunner, Pipeline, StepContext
    from conveyor.project import Project, init_project
    from conveyor.serving.app import create_app
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy
    from conveyor.serving.server import ThreadedServer
    from conveyor.training.flow import train_candidate

    for var in ("CONVEYOR_STORE", "CONVEYOR_ARTIFACTS", "CONVEYOR_EVENTS", "CONVEYOR_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    init_project(tmp_path, name="catalogued")
    with (tmp_path / "conveyor.yaml").open("a") as f:
        f.write(SPEC)
    (tmp_path / "catalogue_trainer.py").write_text(TRAINER)
    with Project.open(tmp_path, env={}) as project:
        # An ingest: extracted, validated, quarantined, a version; then an audited read.
        ingested = project.data.ingest("loans", _loans(400, seed=1, bad=4))
        assert ingested.version is not None and ingested.quarantine is not None
        project.data.versions.read(ingested.version, actor="test", purpose="check")
        # A training: its run, the data it read, the version, its gates, its aliases.
        candidate = train_candidate(project, "risk", seed=1, actor="test")
        shadow = train_candidate(project, "risk", seed=2, actor="test")
        assert candidate.passed and shadow.passed
        with conveyor.run("by-hand", project=project) as run:
            run.log_metrics({"loss": 0.5}, step=1)
        # A pipeline run.
        nightly = Pipeline("nightly")

        @nightly.step
        def only(ctx: StepContext) -> None:
            return None

        LocalRunner.for_project(project).run(nightly).raise_for_status()
        # Keys (once one exists, the server asks for one).
        keys = ApiKeys(project.store, project.events)
        token, _ = keys.create("ci", "predictor", actor="test", rate_per_second=50, burst=10)
        # A route with a shadow, and predictions through the server.
        routes = RouteStore(project.store, project.events, project.registry)
        policy = RoutePolicy.fixed(candidate.version.number, shadow=[shadow.version.number])
        routes.set("risk", policy, actor="test")
        server = ThreadedServer(create_app(project))
        server.start()
        try:
            rows = pd.DataFrame({"income": [40.0, 70.0], "debt": [10.0, 30.0]})
            for i in range(3):
                answer = httpx.post(
                    f"{server.url}/v1/models/risk/predict",
                    json={"records": rows.to_dict("records")},
                    headers={"x-request-id": f"catalogue-{i}", "x-api-key": token},
                    timeout=30,
                )
                assert answer.status_code == 200, answer.text

            def shadowed() -> bool:  # shadow copies are answered after the response
                project.events.flush()
                return project.events.count(kind="prediction.shadow") >= 3

            wait_until(shadowed, timeout=10, interval=0.05, message="3 shadow predictions")
        finally:
            server.stop()
        keys.revoke("ci", actor="test")
        project.events.flush()
        stored = list(project.events.iter())

    catalogue = kinds()
    seen = set()
    for event in stored:
        assert event.kind in catalogue, f"{event.kind} is not catalogued"
        check_payload(catalogue[event.kind], event.payload)
        seen.add(event.kind)
    assert {
        "data.extracted",
        "data.validated",
        "data.quarantined",
        "data.version_created",
        "data.read",
        "run.started",
        "run.metric",
        "run.finished",
        "model.registered",
        "model.alias_moved",
        "model.candidate",
        "pipeline.started",
        "step.started",
        "step.succeeded",
        "pipeline.finished",
        "auth.key_created",
        "auth.key_revoked",
        "route.set",
        "prediction",
        "prediction.shadow",
    } <= seen, sorted(seen)


# -- the docs and the CLI ------------------------------------------------------------------------


def _conveyors_own() -> set[str]:
    """Conveyor's own capabilities (installed by its package), and the foundation."""
    own = {
        ep.name for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.value.startswith("conveyor.")
    }
    return own | {FOUNDATION}


def test_docs_events_md_holds_the_catalogues_table() -> None:
    text = (ROOT / "docs" / "events.md").read_text()
    start = text.index("<!-- kinds:start -->")
    end = text.index("<!-- kinds:end -->")
    documented = text[start:end].split("\n", 1)[1].strip() + "\n"
    expected = markdown_table(_conveyors_own())
    assert documented == expected, (
        "docs/events.md is out of date; replace its table with:\n\n" + expected
    )
    assert "(events.md)" in (ROOT / "docs" / "architecture.md").read_text()


def test_conveyor_events_kinds_lists_the_catalogue() -> None:
    from conveyor.cli import app

    result = CliRunner().invoke(app, ["events", "kinds", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert set(body) == {"items", "next_cursor"} and body["next_cursor"] is None
    items = {item["name"]: item for item in body["items"]}
    assert list(items) == list(kinds())
    assert items["auth.key_created"]["durability"] == "audit"
    assert items["auth.key_created"]["capability"] == "governance"
    assert items["prediction"]["fields"]["flag"] == "str | None"
    assert items["prediction"]["optional"] == ["features", "input", "input_digest"]
    assert items["run.started"]["capability"] == "foundation"
    table = CliRunner().invoke(app, ["events", "kinds"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "route.rolled_back" in table.stdout and "telemetry" in table.stdout
