"""``conveyor llm route show|set|delete``: the gateway's routes kept in the store (see
:mod:`conveyor.gateway.routes_store`)."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli.common import (
    JsonOpt,
    ProjectOpt,
    authorized,
    echo_json,
    echo_list,
    errors,
    open_project,
)
from conveyor.gateway.cli import llm_app

__all__: list[str] = []

route_app = typer.Typer(help="Model aliases routed at run time (they override gateway.models).")
llm_app.add_typer(route_app, name="route")


@route_app.command("show")
@errors
def show_cmd(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """The routes kept in the store (each overrides the spec's alias of the same name)."""
    from conveyor.gateway.routes_store import LlmRoutes

    with open_project(project) as proj:
        routes = list(LlmRoutes(proj.store).all().values())
    if as_json:
        echo_list(routes)
        return
    if not routes:
        typer.echo("no stored routes: the spec's gateway.models route every alias")
        return
    for route in routes:
        weights = ", ".join(f"{k}={v:g}" for k, v in route["weights"].items())
        typer.echo(
            f"{route['alias']} -> {' -> '.join(route['deployments'])}"
            + (f" (weights {weights})" if weights else "")
            + f"  v{route['version']} by {route['actor'] or '?'} at {route['updated_at']}"
        )


@route_app.command("set")
@errors
def set_cmd(
    alias: Annotated[str, typer.Argument(help="The model alias requests name.")],
    to: Annotated[str, typer.Option("--to", help="Deployments, in fallback order: a,b.")],
    weight: Annotated[
        list[str] | None, typer.Option(help="A weighted split: NAME=WEIGHT (repeat).")
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Route ALIAS to deployments of the spec; every server follows within
    gateway.routes_poll_s, with no restart."""
    from conveyor.errors import InvalidInputError
    from conveyor.gateway.routes_store import LlmRoutes
    from conveyor.gateway.settings import gateway_of

    weights: dict[str, float] = {}
    for item in weight or []:
        name, _, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise InvalidInputError(f"--weight {item!r}: NAME=NUMBER", field="weight") from None
    with open_project(project) as proj:
        actor = authorized(proj, "llm.manage")
        route = LlmRoutes(proj.store, proj.events).set(
            gateway_of(proj.spec),
            alias,
            [d.strip() for d in to.split(",") if d.strip()],
            weights,
            actor=actor,
        )
    if as_json:
        echo_json(route)
    else:
        typer.echo(f"{alias} -> {' -> '.join(route['deployments'])} (v{route['version']})")


@route_app.command("delete")
@errors
def delete_cmd(
    alias: Annotated[str, typer.Argument(help="The alias whose stored route goes.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete ALIAS's stored route: the spec's gateway.models route it again (or nothing)."""
    from conveyor.gateway.routes_store import LlmRoutes

    with open_project(project) as proj:
        actor = authorized(proj, "llm.manage")
        previous = LlmRoutes(proj.store, proj.events).delete(alias, actor=actor)
    if as_json:
        echo_json({"deleted": previous})
    else:
        typer.echo(f"deleted the stored route of {alias}")
