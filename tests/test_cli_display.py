"""What the CLI prints for people: names and reasons as written (no emoji codes, no
markup), mappings as ``k=v``, and data set versions by name, not by id."""

from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

from conveyor.cli import app

sys.path.insert(0, str(Path(__file__).parent / "serving"))


def test_user_text_is_printed_as_written_and_values_as_people_read_them(tmp_path: Path) -> None:
    from serving_support import linear_project

    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    project = linear_project(tmp_path, name="display", scales=(1.0, 2.0))
    RouteStore(project.store, project.events, project.registry).set(
        "m", RoutePolicy.fixed(2), actor="ana", reason=":fire: [bold]hot[/bold] fix"
    )
    project.close()
    runner = CliRunner()
    shown = runner.invoke(app, ["route", "show", "m", "-C", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert ":fire: [bold]hot[/bold] fix" in shown.output and "🔥" not in shown.output
    version = runner.invoke(app, ["models", "show", "m@1", "-C", str(tmp_path)])
    assert version.exit_code == 0, version.output
    assert "{'" not in version.output and "['" not in version.output
    assert "  parent: -" in version.output and "  datasets: -" in version.output
    assert "python=3." in version.output  # environment: k=v, not a dict's repr


def test_models_show_and_compare_name_the_training_data_by_version(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from conveyor.project import Project, init_project

    init_project(tmp_path, name="lineage")
    with Project.open(tmp_path, env={}) as project:
        frame = pd.DataFrame(
            {"x": [float(i) for i in range(40)], "y": [2.0 * i for i in range(40)]}
        )
        result = project.data.ingest("points", frame, actor="test")
        assert result.version is not None
        model = LinearRegression().fit(frame[["x"]], frame["y"])
        project.registry.register(
            "line", model, signature_from=frame[["x"]], dataset_versions=[result.version]
        )
    runner = CliRunner()
    shown = runner.invoke(app, ["models", "show", "line@1", "-C", str(tmp_path)])
    assert "  datasets: points@1" in shown.output, shown.output
    compared = runner.invoke(app, ["models", "compare", "line@1", "line@1", "-C", str(tmp_path)])
    assert "points@1" in compared.output and result.version.id not in compared.output


def test_reasons_in_history_tables_are_not_markup(tmp_path: Path) -> None:
    from serving_support import linear_project

    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

    project = linear_project(tmp_path, name="display", scales=(1.0, 2.0))
    RouteStore(project.store, project.events, project.registry).set(
        "m", RoutePolicy.fixed(2), actor="ana", reason="[red]see[/red] ticket"
    )
    project.close()
    history = CliRunner().invoke(app, ["route", "history", "m", "-C", str(tmp_path)])
    assert history.exit_code == 0 and "[red]see[/red]" in history.output, history.output
