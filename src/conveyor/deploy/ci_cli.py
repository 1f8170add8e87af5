"""``conveyor ci init --provider github|gitlab``: a CI/CD pipeline for the project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli.common import JsonOpt, ProjectOpt, echo_json, errors, open_project

__all__ = ["ci_app"]

ci_app = typer.Typer(help="CI/CD pipeline templates for the project.", no_args_is_help=True)


@ci_app.command("init")
@errors
def init(
    provider: Annotated[
        str, typer.Option(help="github (Actions workflow) or gitlab (.gitlab-ci.yml).")
    ] = "github",
    output: Annotated[
        Path | None,
        typer.Option(
            help="Where to write it (default: .github/workflows/conveyor.yaml or "
            ".gitlab-ci.yml in the project)."
        ),
    ] = None,
    test_command: Annotated[
        str, typer.Option(help="The command that lints and tests the project.")
    ] = "pytest",
    install_command: Annotated[
        str | None,
        typer.Option(
            help="How a job installs the project (default: pip install 'conveyor[serve,deploy]')."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a pipeline: tests, data checks, training through the gates, the image; deploy
    to staging and smoke; an approval; production through a rollout, rolled back (and a
    notification sent) when it fails.

    Environments come from the spec, in promotion order. Secrets are read from the CI's
    secret store (docs/deploy.md lists them).
    """
    from conveyor.deploy.ci import (
        DEFAULT_INSTALL,
        DEFAULT_PATHS,
        render_pipeline,
        write_pipeline,
    )

    with open_project(project) as proj:
        pipeline = render_pipeline(
            proj.spec,
            provider,
            test_command=test_command,
            install_command=install_command or DEFAULT_INSTALL,
        )
        target = output or proj.root / DEFAULT_PATHS[provider]
        if not target.is_absolute():
            target = Path.cwd() / target
        write_pipeline(pipeline, target, force=force)
    if as_json:
        echo_json(pipeline.to_dict())
        return
    typer.echo(f"wrote {target}: jobs {' -> '.join(pipeline.jobs)}")
    for note in pipeline.notes:
        typer.secho(f"note: {note}", err=True)
