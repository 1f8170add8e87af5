"""Feature definitions: checked when the spec loads (references) and at apply (columns and
types against the sources), versioned by apply, earlier versions readable."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from conveyor.cli import app
from conveyor.errors import ConfigError, NotFoundError
from conveyor.features.sources import FeatureDefinitionError
from conveyor.project import Project, init_project

FEATURES = """
features:
  entities:
    customer: {join_keys: [customer_id], value_types: {customer_id: int64}}
  views:
    spend:
      entities: [customer]
      source: {dataset: tx}
      event_time: ts
      ttl: 7d
      features:
        - {name: amount, type: double}
      aggregates:
        - {column: amount, functions: [sum, count], windows: [1h, 24h, 7d]}
  services:
    fraud: {features: ["spend:*"]}
"""


def _project(root: Path, features: str = FEATURES) -> Project:
    init_project(root, name="fs")
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(features)
    project = Project.open(root, env={})
    project.data.ingest(
        "tx",
        pa.table(
            {
                "customer_id": pa.array([1, 2, 1], pa.int64()),
                "ts": pa.array([1_700_000_000_000_000] * 3, pa.timestamp("us", tz="UTC")),
                "amount": [10.0, 20.0, 30.0],
                "note": ["a", "b", "c"],
            }
        ),
        actor="test",
        new=True,
    )
    return project


def test_apply_versions_what_changed_and_keeps_earlier_versions(tmp_path: Path) -> None:
    with _project(tmp_path) as project:
        first = {
            (a.kind, a.name): (a.version, a.status) for a in project.features.apply(actor="ana")
        }
        assert first == {
            ("entity", "customer"): (1, "created"),
            ("view", "spend"): (1, "created"),
            ("service", "fraud"): (1, "created"),
        }
        again = project.features.apply(actor="ana")
        assert {a.status for a in again} == {"unchanged"}
        view = project.features.definition("view", "spend")
        assert view.definition["feature_names"] == [
            "amount", "amount_sum_1h", "amount_sum_24h", "amount_sum_7d",
            "amount_count_1h", "amount_count_24h", "amount_count_7d",
        ]  # fmt: skip
        service = project.features.definition("service", "fraud")
        assert service.definition["views"] == {"spend": 1}
    # A changed TTL is a new version of the view, and of the service that reads it.
    text = (tmp_path / "conveyor.yaml").read_text().replace("ttl: 7d", "ttl: 2d")
    (tmp_path / "conveyor.yaml").write_text(text)
    with Project.open(tmp_path, env={}) as project:
        changed = {
            (a.kind, a.name): (a.version, a.status) for a in project.features.apply(actor="bo")
        }
        assert changed[("view", "spend")] == (2, "changed")
        assert changed[("service", "fraud")] == (2, "changed")
        assert changed[("entity", "customer")] == (1, "unchanged")
        assert project.features.definition("view", "spend", 1).definition["ttl"] == "P7D"
        assert project.features.definition("view", "spend").definition["ttl"] == "P2D"
        assert [d.version for d in project.features.history("view", "spend")] == [2, 1]
        with pytest.raises(NotFoundError, match="no applied view 'nope'"):
            project.features.definition("view", "nope")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("{name: amount, type: double}", "{name: amont, type: double}"),
        ("{name: amount, type: double}", "{name: amount, type: string}"),
        ("event_time: ts", "event_time: note"),
        ("column: amount", "column: note"),
        ("value_types: {customer_id: int64}", "value_types: {customer_id: string}"),
    ],
    ids=["missing-column", "wrong-type", "time-not-timestamp", "aggregate-not-number", "key-type"],
)
def test_apply_refuses_a_definition_that_does_not_fit_its_source(
    tmp_path: Path, edit: str, message: str
) -> None:
    with _project(tmp_path, FEATURES.replace(edit, message)) as project:
        with pytest.raises(FeatureDefinitionError, match=r"views\.spend") as refused:
            project.features.apply(actor="ana")
        assert refused.value.code == "feature_definition_invalid"
        assert project.features.definitions() == []  # nothing stored


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("ttl: 7d", "ttl: -1d"),
        ("ttl: 7d", "ttl: soon"),
        ("entities: [customer]", "entities: [client]"),
        ('["spend:*"]', '["spend:amount_sum_2h"]'),
        ('["spend:*"]', '["spand:amount"]'),
    ],
    ids=["negative-ttl", "bad-ttl", "unknown-entity", "unknown-feature", "unknown-view"],
)
def test_bad_references_and_durations_are_spec_errors(
    tmp_path: Path, edit: str, message: str
) -> None:
    init_project(tmp_path, name="fs")
    with (tmp_path / "conveyor.yaml").open("a") as spec:
        spec.write(FEATURES.replace(edit, message))
    with pytest.raises(ConfigError, match=r"conveyor\.yaml:\d+"):
        Project.open(tmp_path, env={})


def test_the_cli_applies_lists_and_shows(tmp_path: Path) -> None:
    _project(tmp_path).close()
    runner = CliRunner()
    applied = runner.invoke(app, ["features", "apply", "-C", str(tmp_path)])
    assert applied.exit_code == 0, applied.output
    assert "created   view spend @1" in applied.output
    listed = runner.invoke(app, ["features", "list", "-C", str(tmp_path), "--json"])
    assert {d["name"] for d in __import__("json").loads(listed.output)["items"]} == {
        "customer", "spend", "fraud"
    }  # fmt: skip
    shown = runner.invoke(app, ["features", "show", "view", "spend", "-C", str(tmp_path)])
    assert shown.exit_code == 0 and "view:spend@1" in shown.output
    missing = runner.invoke(app, ["features", "show", "view", "nope", "-C", str(tmp_path)])
    assert missing.exit_code == 1 and "no applied view 'nope'" in missing.output
    runner.invoke(app, ["features", "apply", "-C", str(tmp_path)])  # nothing changed
    audit = runner.invoke(
        app, ["events", "tail", "--kind", "features.applied", "--json", "-C", str(tmp_path)]
    )
    (event,) = __import__("json").loads(audit.output)["items"]  # one: the second changed nothing
    assert set(event["payload"]["created"]) == {
        "entity:customer@1", "view:spend@1", "service:fraud@1"
    }  # fmt: skip
