"""The settings reference: every field of the assembled spec, its default, and the variable
that really overrides it; docs/spec.md holds it and `conveyor spec` prints it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor.cli import app
from conveyor.config import ConfigError, load_spec
from conveyor.spec_reference import markdown_table, settings

DOC = Path(__file__).parents[1] / "docs" / "spec.md"

SPEC = """\
project: ref
models:
  Fraud:
    train: model:train
    dataset: tx
    features: [amount]
    target: label
"""


def _by_path() -> dict[str, object]:
    return {s.path: s for s in settings()}


def test_every_section_is_listed_and_retired_fields_are_not() -> None:
    found = _by_path()
    for path in (
        "project",
        "backends.store",
        "backends.ratelimit",
        "slos.quality.floor",
        "events.spill_dir",
        "datasets.<name>.on_failure",
        "encryption.key_env",
        "serving.batching.max_wait_ms",
        "models.<name>.holdout.fraction",
    ):
        assert path in found, path
    assert "serving.rate_limiter" not in found and "backends.online" not in found
    assert "root" not in found  # filled in from where the file is, never set
    assert len(found) == len(settings())  # one row per field


def test_the_variable_of_each_field_overrides_it(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text(SPEC)
    rows = _by_path()
    values = {
        "project": "renamed",
        "backends.ratelimit": "redis://127.0.0.1:6379/3",
        "events.buffer": "5000",
        "serving.port": "8081",
        "serving.auth": "disabled",
        "serving.batching.max_wait_ms": "0.5",
        "models.<name>.holdout.fraction": "0.1",
        "models.<name>.features": '["amount", "hour"]',
    }
    env = {}
    for path, value in values.items():
        variable = rows[path].variable  # type: ignore[attr-defined]
        env[variable.replace("__NAME__", "__FRAUD__")] = value
    spec = load_spec(tmp_path, env=env)
    assert spec.project == "renamed"
    assert spec.backends.ratelimit.render() == "redis://127.0.0.1:6379/3"
    assert spec.events.buffer == 5000
    serving = spec.section("serving")
    assert (serving.port, serving.auth, serving.batching.max_wait_ms) == (8081, "disabled", 0.5)
    model = spec.section("models")["Fraud"]
    assert model.holdout.fraction == 0.1 and model.features == ["amount", "hour"]


def test_a_bad_value_names_its_variable(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text(SPEC)
    with pytest.raises(ConfigError, match=r"\$CONVEYOR_SERVING__PORT: serving\.port: .*integer"):
        load_spec(tmp_path, env={"CONVEYOR_SERVING__PORT": "eighty"})


def test_defaults_are_the_models_defaults(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text(SPEC)
    spec = load_spec(tmp_path, env={})
    rows = _by_path()
    assert rows["serving.port"].default == str(spec.section("serving").port)  # type: ignore[attr-defined]
    assert rows["events.buffer"].default == str(spec.events.buffer)  # type: ignore[attr-defined]
    assert rows["backends.store"].default == "sqlite:///.conveyor/conveyor.db"  # type: ignore[attr-defined]
    assert rows["models.<name>.target"].default == "required"  # type: ignore[attr-defined]
    assert rows["serving.cache"].default == "true"  # type: ignore[attr-defined]


def test_docs_hold_the_reference() -> None:
    text = DOC.read_text()
    start = text.index("<!-- settings:start -->\n") + len("<!-- settings:start -->\n")
    end = text.index("<!-- settings:end -->")
    assert text[start:end] == markdown_table(), (
        "docs/spec.md is out of date: paste conveyor.spec_reference.markdown_table() "
        "between its settings markers"
    )


def test_the_cli_lists_the_same_settings() -> None:
    result = CliRunner().invoke(app, ["spec", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["next_cursor"] is None
    assert [item["path"] for item in body["items"]] == [s.path for s in settings()]
    text = CliRunner().invoke(app, ["spec"])
    assert text.exit_code == 0 and "serving.port" in text.output and "8000" in text.output
