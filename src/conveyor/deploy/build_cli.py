"""``conveyor build``: the image recipe, its locked requirements and docker-compose.

::

    conveyor build                          # Dockerfile, requirements.lock, .dockerignore
    conveyor build --env prod --tag 1.4.0   # the prod environment's spec, tagged 1.4.0
    conveyor build --bake --compose         # the routed models inside; docker-compose.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli.common import JsonOpt, ProjectOpt, authorized, echo_json, errors, open_project

__all__ = ["app"]

app = typer.Typer()


@app.command()
@errors
def build(
    output: Annotated[
        Path | None,
        typer.Option(
            help="Write the build context here (default: the project folder); the project's "
            "files are copied in."
        ),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option(help="The image tag (default: deploy.image.tag, else the git commit)."),
    ] = None,
    bake: Annotated[
        bool | None,
        typer.Option(
            "--bake/--no-bake",
            help="Copy the routed versions' artifacts into the image, with a manifest of "
            "their sha256 (default: deploy.image.bake_models).",
        ),
    ] = None,
    compose: Annotated[
        bool,
        typer.Option(
            "--compose",
            help="Also write docker-compose.yaml: the server, PostgreSQL, Redis, NATS, "
            "Prometheus on one host.",
        ),
    ] = False,
    hashes: Annotated[
        bool,
        typer.Option(
            "--hashes/--no-hashes",
            help="Lock each file's sha256 from the package indexes (--no-hashes: versions only, "
            "for an index that publishes none).",
        ),
    ] = True,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace files conveyor build did not write, or edited."),
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the project's image build context: a multi-stage Dockerfile, requirements.lock
    (only the extras the spec uses, pinned and hashed), .dockerignore.

    Models are read from the artifact store at start by digest and checked against their
    sha256; --bake puts the routed versions in the image instead. Refuses to replace a file
    it did not write, or one edited since, without --force.
    """
    from conveyor.deploy.image import build_context
    from conveyor.deploy.settings import deploy_of

    with open_project(project) as proj:
        if bake or (bake is None and deploy_of(proj.spec).image.bake_models):
            authorized(proj, "models.read")  # the artifacts leave the store
        result = build_context(
            proj, output=output, tag=tag, bake=bake, compose=compose, force=force, hashes=hashes
        )
    if as_json:
        echo_json(result.to_dict())
        return
    summary = result.to_dict()
    extras = ",".join(result.extras)
    typer.echo(
        f"wrote {len(result.written)} files to {result.output}: conveyor[{extras}], "
        f"{summary['pinned']} pinned distributions"
        + (" with hashes" if result.lock.hashed else " (no hashes)")
        + (f", {len(result.models)} baked models" if result.models else "")
    )
    for name, why in result.extras.items():
        typer.echo(f"  {name}: {why}")
    for note in result.notes:
        typer.secho(f"note: {note}", err=True)
    typer.echo(summary["build"])
