"""``conveyor ci init --provider github|gitlab``: a CI/CD pipeline for the project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli.common import JsonOpt, ProjectOpt, echo_json, errors

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
            ".gitlab-ci.yml at the root of the project's git repository, else of the project)."
        ),
    ] = None,
    test_command: Annotated[
        str, typer.Option(help="The command that lints and tests the project (make test).")
    ] = "pytest",
    install_command: Annotated[
        str | None,
        typer.Option(
            help="How a job installs the project (default: pip install 'conveyor[serve,deploy]')."
        ),
    ] = None,
    branch: Annotated[
        str, typer.Option(help="GitHub: the branch that deploys (GitLab: the default branch).")
    ] = "main",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a pipeline: tests, data checks, training through the gates, the image; deploy
    to staging and smoke; an approval; production through a rollout, rolled back (and a
    notification sent) when it fails.

    Environments come from the spec, in promotion order. Secrets are read from the CI's
    secret store (the file's header and docs/deploy.md list them).
    """
    from conveyor.config import load_spec
    from conveyor.deploy.ci import (
        DEFAULT_INSTALL,
        DEFAULT_PATHS,
        render_pipeline,
        repository_root,
        write_pipeline,
    )

    spec = load_spec(project)
    root = spec.root.resolve()
    top = repository_root(root) or root
    pipeline = render_pipeline(
        spec,
        provider,
        test_command=test_command,
        install_command=install_command or DEFAULT_INSTALL,
        workdir=root.relative_to(top).as_posix(),
        branch=branch,
    )
    target = (output if output is not None else top / DEFAULT_PATHS[provider]).absolute()
    write_pipeline(pipeline, target, force=force)
    if as_json:
        echo_json(pipeline.to_dict())
        return
    typer.echo(f"wrote {target}: jobs {' -> '.join(pipeline.jobs)}")
    typer.echo(f"secrets to set in the CI's store: {', '.join(pipeline.secrets)}")
    for note in pipeline.notes:
        typer.secho(f"note: {note}", err=True)
