"""The settings reference: every field of the assembled spec, its default, and the variable
that really overrides it; docs/spec.md holds it and `conveyor spec` prints it."""

from __future__ import annotations

import inspect
import json
import re
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor.cli import app
from conveyor.config import ConfigError, load_spec
from conveyor.spec_reference import (
    PARTS,
    markdown,
    markdown_table,
    parts,
    settings,
    update_markdown,
)

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
    assert "serving.rate_limiter" not in found and "backends.online" in found  # features
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


# -- the parts: what a field names by kind or by name --------------------------------------


def _section(name: str) -> str:
    text = DOC.read_text()
    start = text.index(f"<!-- {name}:start -->\n") + len(f"<!-- {name}:start -->\n")
    return text[start : text.index(f"<!-- {name}:end -->")]


def test_docs_hold_every_part_as_generated() -> None:
    assert [p.name for p in parts()] == ["sources", "expectations", "types", "metrics", "gates"]
    for part in parts():
        assert _section(part.name) == markdown(part.name), (
            f"docs/spec.md is out of date ({part.name}): run "
            "python -m conveyor.spec_reference docs/spec.md"
        )
    text = DOC.read_text()
    assert update_markdown(text) == text


def _cells(part: str, column: str) -> list[str]:
    return [item[column] for item in PARTS[part].items()]


def test_the_parts_are_read_off_the_code() -> None:
    from conveyor.checks.metrics import METRICS
    from conveyor.data.sources.spec import CSVSpec, HTTPSpec, ParquetSpec, SQLSpec
    from conveyor.data.validation import EXPECTATION_KINDS
    from conveyor.training.flow import GATES

    sources = PARTS["sources"].items()
    for model in (CSVSpec, ParquetSpec, SQLSpec, HTTPSpec):
        kind = typing.get_args(model.model_fields["kind"].annotation)[0]
        options = [s["option"] for s in sources if s["kind"] == kind]
        assert options == [n for n in model.model_fields if n != "kind"], kind
    assert all(s["meaning"] for s in sources), "every source option says what it does"
    assert _cells("expectations", "kind")[1:] == list(EXPECTATION_KINDS)
    assert all(_cells("expectations", "meaning")), "every expectation kind says what it does"
    assert _cells("metrics", "metric") == list(METRICS)
    assert _cells("gates", "gate") == list(GATES)
    assert all(_cells("gates", "meaning"))


def test_float_is_float32_and_float64_is_accepted() -> None:
    rows = {item["type name"]: item for item in PARTS["types"].items()}
    assert rows["float"]["numpy dtype"] == "float32" and rows["float"]["also accepted"] == "float32"
    assert (
        rows["double"]["numpy dtype"] == "float64" and "float64" in rows["double"]["also accepted"]
    )
    assert "**`float` is Arrow's float32**" in DOC.read_text()


def test_every_option_a_gate_takes_is_documented() -> None:
    """A built-in gate's options are its factory's keyword arguments (``metric`` for
    ``metric_name``): each is named in the gate's row."""
    import conveyor.training.gates as factories

    options = {item["gate"]: item["options"] for item in PARTS["gates"].items()}
    from_context = {"slo", "result", "examples"}  # the spec or the project gives these
    for gate, documented in options.items():
        factory = getattr(factories, gate)
        for name, parameter in inspect.signature(factory).parameters.items():
            if name in from_context or parameter.kind is parameter.VAR_KEYWORD:
                continue
            shown = "metric" if name == "metric_name" else name
            assert f"`{shown}`" in documented, f"{gate}: option {shown} is not documented"


def test_a_registered_entry_is_listed() -> None:
    from conveyor.checks.metrics import METRICS, Metric, register

    register(Metric("max_error", "value", False, regression=lambda y, p: abs(y - p).max(-1)))
    try:
        row = PARTS["metrics"].items()[-1]
        assert row == {
            "metric": "max_error",
            "tasks": "regression",
            "reads": "predictions",
            "better": "lower (minimize)",
        }
    finally:
        METRICS.unregister("max_error")


def test_the_cli_prints_a_part() -> None:
    result = CliRunner().invoke(app, ["spec", "metrics", "--json"])
    assert result.exit_code == 0, result.output
    items = json.loads(result.output)["items"]
    assert {
        "metric": "r2",
        "tasks": "regression",
        "reads": "predictions",
        "better": "higher (maximize)",
    } in items
    text = CliRunner().invoke(app, ["spec", "expectations"])
    assert text.exit_code == 0 and "matches_regex" in text.output
    wrong = CliRunner().invoke(app, ["spec", "metric"])
    assert wrong.exit_code == 1 and "unknown part of the spec reference 'metric'" in wrong.output


# -- every YAML example of docs/spec.md is a valid spec --------------------------------------

_FENCE = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def _examples() -> list[str]:
    return _FENCE.findall(DOC.read_text())


def test_the_docs_have_examples_of_every_section() -> None:
    text = "\n".join(_examples())
    for section in ("datasets:", "models:", "serving:", "encryption:", "retrain:", "slos:"):
        assert section in text, section
    for kind in ("csv", "parquet", "sql", "http"):
        assert f"kind: {kind}" in text, kind


@pytest.mark.parametrize("example", _examples(), ids=lambda e: e.split("\n")[0])
def test_every_yaml_example_in_the_docs_is_a_valid_spec(tmp_path: Path, example: str) -> None:
    """Loaded as conveyor.yaml, and what the spec leaves to its capabilities checked as they
    do: sources built, expectations parsed, gate names known, metrics named."""
    from conveyor.checks.metrics import METRICS
    from conveyor.data.settings import datasets_of
    from conveyor.data.sources import source_from_spec
    from conveyor.data.validation import parse_expectations
    from conveyor.training.flow import GATES
    from conveyor.training.settings import models_of

    (tmp_path / "conveyor.yaml").write_text(example)
    spec = load_spec(tmp_path, env={})
    env = {"DB_PASSWORD": "secret", "ORDERS_TOKEN": "token"}
    for name, dataset in datasets_of(spec).items():
        if dataset.source is not None:
            source_from_spec(dataset.source, root=tmp_path, where=name, name=name, env=env)
        parse_expectations(dataset.expectations, where=f"datasets.{name}.expectations")
    for model in models_of(spec).values():
        for gate in model.gates:
            ((gate_name, options),) = gate.items()
            GATES.require(gate_name)
            if "metric" in options:
                METRICS.require(options["metric"])
    if spec.slos.quality is not None:
        METRICS.require(spec.slos.quality.metric)
