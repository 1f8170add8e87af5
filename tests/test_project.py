"""One Project: backends and capabilities' services built once, kept, closed once."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.capability import Capability, register, unregister
from conveyor.errors import ClosedError, InvalidInputError
from conveyor.governance.keys import ApiKeys
from conveyor.project import Project, init_project
from conveyor.registry import Registry


class Closing:
    """A service that records its close (an instance per project)."""

    closed: list[str] = []

    def __init__(self, project: Project) -> None:
        self.name = project.name

    @classmethod
    def for_project(cls, project: Project) -> Closing:
        return cls(project)

    def close(self) -> None:
        Closing.closed.append(self.name)


def test_services_are_built_once_and_closed_with_the_project(tmp_path: Path) -> None:
    init_project(tmp_path, name="one")
    register(Capability("closing_test", services={"closing": f"{__name__}:Closing.for_project"}))
    try:
        with Project.open(tmp_path, env={}) as project:
            registry = project.registry
            assert project.registry is registry  # cached, not rebuilt on each access
            assert isinstance(registry, Registry)
            assert project.service("registry", Registry) is registry
            assert isinstance(project.keys, ApiKeys)
            assert project.data is project.data
            assert project.closing is project.closing
            with pytest.raises(InvalidInputError, match="is a Registry, not a ApiKeys"):
                project.service("registry", ApiKeys)
            with pytest.raises(AttributeError, match="no capability provides a service named"):
                _ = project.no_such_service
        assert Closing.closed == ["one"]  # closed once, with the project
        project.close()  # idempotent
        assert Closing.closed == ["one"]
        with pytest.raises(ClosedError):
            _ = project.registry
    finally:
        unregister("closing_test")


def test_options_after_a_backend_opened_are_an_error_not_ignored(tmp_path: Path) -> None:
    init_project(tmp_path, name="opts")
    with Project.open(tmp_path, env={}) as project:
        events = project.events
        assert project.backend("events") is events  # no options: the open one
        with pytest.raises(InvalidInputError, match="already open with options"):
            project.backend("events", batch_size=7)
        with pytest.raises(InvalidInputError, match="unknown seam 'nope'"):
            project.backend("nope")
        # The spec's options for the event log were used when it opened.
        assert events.health()["spill_dir"] == str(tmp_path / ".conveyor/spill/events")


# -- conveyor init: the template and its commented stubs -------------------------------------

_MODEL_PY = """\
from sklearn.linear_model import LinearRegression, LogisticRegression


def fit(X, y, *, seed, **params):
    if y.nunique() == 2:
        return LogisticRegression(random_state=seed, **params).fit(X, y)
    return LinearRegression(**params).fit(X, y)
"""


def _uncommented(text: str) -> str:
    """The spec with its commented ``datasets:`` and ``models:`` blocks uncommented, as a user
    does: a block is the ``# datasets:`` line and the indented ``#   ...`` lines under it."""
    lines, inside = [], False
    for line in text.splitlines():
        if line in ("# datasets:", "# models:"):
            inside = True
        elif not line.startswith("#   "):
            inside = False
        lines.append(line[2:] if inside else line)
    return "\n".join(lines) + "\n"


def _training_data(path: Path, task: str, rows: int = 400) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    signal = 3 * x1 - 2 * x2 + rng.normal(scale=0.3, size=rows)
    target = (signal > 0).astype(int) if task == "classification" else signal
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"x1": x1, "x2": x2, "target": target}).to_csv(path, index=False)


@pytest.mark.parametrize(
    ("template", "metric"), [("classification", "roc_auc"), ("regression", "r2")]
)
def test_the_template_picks_the_tasks_metric_and_its_stubs_train_a_model(
    tmp_path: Path, template: str, metric: str
) -> None:
    from conveyor.config import load_spec
    from conveyor.training.flow import train_candidate
    from conveyor.training.settings import DEFAULT_METRICS, model_spec

    spec_path = init_project(tmp_path, name="demo", template=template)
    text = spec_path.read_text()
    quality = load_spec(tmp_path, env={}).slos.quality
    assert quality is not None and quality.metric == metric == DEFAULT_METRICS[template]
    assert "# datasets:" in text and "# models:" in text  # commented: the project loads as is

    spec_path.write_text(_uncommented(text))
    (tmp_path / "model.py").write_text(_MODEL_PY)
    _training_data(tmp_path / "data" / "train.csv", template)
    with Project.open(tmp_path) as project:
        assert model_spec(project.spec, "model").task == template
        ingested = project.data.ingest("train")
        assert ingested.version is not None and ingested.rows_accepted == 400
        candidate = train_candidate(project, "model", seed=0)
        assert candidate.passed, candidate.report
        assert candidate.version.metrics[f"holdout_{metric}"] > quality.floor
        assert candidate.promotion is not None  # auto_promote: true in the stub


def test_an_unknown_template_is_refused(tmp_path: Path) -> None:
    from conveyor.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown template 'ranking'; templates: classification"):
        init_project(tmp_path, template="ranking")
    assert not (tmp_path / "conveyor.yaml").exists()


def test_conveyor_init_takes_a_template(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from conveyor.cli import app
    from conveyor.config import load_spec

    result = CliRunner().invoke(app, ["init", str(tmp_path), "--template", "regression"])
    assert result.exit_code == 0, result.output
    quality = load_spec(tmp_path, env={}).slos.quality
    assert quality is not None and (quality.metric, quality.direction) == ("r2", "maximize")
    assert "#     task: regression" in (tmp_path / "conveyor.yaml").read_text()


def test_without_a_quality_slo_a_model_is_judged_by_its_tasks_default_metric(
    tmp_path: Path,
) -> None:
    import re

    from conveyor.training.flow import train_candidate
    from conveyor.training.settings import default_metric

    assert default_metric("classification") == "roc_auc"
    assert default_metric("classification", scores=False) == "accuracy"
    assert default_metric("regression") == "r2"
    spec_path = init_project(tmp_path, name="demo", template="regression")
    text = re.sub(r"\nslos:\n(  .*\n)+", "\n", _uncommented(spec_path.read_text()))
    spec_path.write_text(text.replace("      - metric_floor: {}", "      - data_checks: {}"))
    (tmp_path / "model.py").write_text(_MODEL_PY)
    _training_data(tmp_path / "data" / "train.csv", "regression")
    with Project.open(tmp_path) as project:
        assert project.spec.slos.quality is None
        project.data.ingest("train")
        metrics = train_candidate(project, "model", seed=0).version.metrics
    assert set(metrics) == {"holdout_r2", "train_rows", "holdout_rows"}
    assert metrics["holdout_r2"] > 0.9
