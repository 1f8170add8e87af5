"""``conveyor features ...``: the feature store's definitions and its online side.

::

    conveyor features apply            # check against the sources, version what changed
    conveyor features materialize      # latest values per entity into backends.online
    conveyor features get fraud -e customer_id=42
    conveyor features parity fraud     # online against offline for sampled keys
    conveyor features list             # the latest version of each definition
    conveyor features show view customer_spend [--version 1]
    conveyor features history view customer_spend
"""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli.common import (
    JsonOpt,
    ProjectOpt,
    authorized,
    console,
    echo_json,
    echo_list,
    errors,
    open_project,
    when,
)

features_app = typer.Typer(
    help="The feature store: apply, list and show feature definitions.", no_args_is_help=True
)

KindArg = Annotated[str, typer.Argument(help="entity | view | on_demand | service")]
NameArg = Annotated[str, typer.Argument(help="The definition's name.")]


@features_app.command("apply")
@errors
def apply_cmd(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Check the spec's features: against their sources and store what changed as new
    versions (earlier ones stay readable)."""
    with open_project(project) as proj:
        who = authorized(proj, "features.apply")
        applied = proj.features.apply(actor=who)
    if as_json:
        echo_list(a.to_dict() for a in applied)
        return
    if not applied:
        typer.echo("no features: in conveyor.yaml (docs/spec.md: features)")
        return
    for a in applied:
        typer.echo(f"{a.status:<9} {a.kind} {a.name} @{a.version}")


@features_app.command("list")
@errors
def list_cmd(
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The latest applied version of each definition."""
    with open_project(project) as proj:
        found = proj.features.definitions(kind)
    if as_json:
        echo_list(d.to_dict() for d in found)
        return
    from rich.table import Table

    table = Table(title="feature definitions", title_justify="left")
    for column in ("kind", "name", "version", "applied", "by"):
        table.add_column(column)
    for d in found:
        table.add_row(d.kind, d.name, str(d.version), when(d.applied_at), d.actor or "-")
    console().print(table)


@features_app.command("show")
@errors
def show_cmd(
    kind: KindArg,
    name: NameArg,
    version: Annotated[int | None, typer.Option(help="This version (default: the latest).")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One applied definition, as stored."""
    with open_project(project) as proj:
        found = proj.features.definition(kind, name, version)
    if as_json:
        echo_json(found.to_dict())
        return
    import json

    typer.echo(f"{found.ref} applied {when(found.applied_at)} by {found.actor or '-'}")
    typer.echo(json.dumps(found.definition, indent=2, sort_keys=True))


@features_app.command("history")
@errors
def history_cmd(
    kind: KindArg, name: NameArg, project: ProjectOpt = None, as_json: JsonOpt = False
) -> None:
    """Every applied version of one definition, newest first."""
    with open_project(project) as proj:
        found = proj.features.history(kind, name)
    if as_json:
        echo_list(d.to_dict() for d in found)
        return
    for d in found:
        typer.echo(f"{d.ref} {d.digest[:19]} {when(d.applied_at)} by {d.actor or '-'}")


@features_app.command("materialize")
@errors
def materialize_cmd(
    views: Annotated[
        list[str] | None, typer.Argument(help="Views to write (default: every view).")
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write each view's latest row per entity, and its aggregates as of now, to the online
    store (backends.online); a newer row already there is kept."""
    from conveyor.features.materialize import materialize

    with open_project(project) as proj:
        who = authorized(proj, "features.materialize")
        done = materialize(proj, views, actor=who)
    if as_json:
        echo_list(m.to_dict() for m in done)
        return
    for m in done:
        typer.echo(
            f"{m.view}: {m.rows:,} rows, {m.entities:,} entities: {m.written:,} written, "
            f"{m.kept:,} kept (newer online), {m.expired:,} past their TTL"
            + (f"; aggregates of {m.aggregates:,} entities" if m.aggregates else "")
        )


@features_app.command("get")
@errors
def get_cmd(
    service: Annotated[str, typer.Argument(help="A feature service (or view:feature).")],
    entity: Annotated[
        list[str], typer.Option("--entity", "-e", help="key=value (repeat for more keys).")
    ],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The online values of SERVICE for one entity, with each value's status."""
    from conveyor.errors import InvalidInputError
    from conveyor.features.materialize import online_features

    row: dict[str, object] = {}
    for item in entity:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInputError(f"--entity {item!r}: expected key=value", field="entity")
        row[key] = int(value) if value.lstrip("-").isdigit() else value
    refs: str | list[str] = [service] if ":" in service else service
    with open_project(project) as proj:
        (found,) = online_features(proj, [row], refs)
    if as_json:
        echo_json(found)
        return
    for name, value in found["features"].items():
        typer.echo(f"{name} = {value!r} ({found['status'][name]})")


@features_app.command("parity")
@errors
def parity_cmd(
    service: Annotated[str, typer.Argument(help="The feature service to check.")],
    sample: Annotated[int, typer.Option(help="Entity keys to sample.")] = 100,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare the online values of SERVICE with what the offline path computes for now, for
    sampled entity keys; exit 3 when any differs (the report is saved)."""
    from conveyor.cli.common import check_failed, echo_report
    from conveyor.features.materialize import parity

    with open_project(project) as proj:
        who = authorized(proj, "features.check")
        report = parity(proj, service, sample=sample, actor=who)
    echo_report(report, as_json)
    if not report.passed:
        check_failed()
