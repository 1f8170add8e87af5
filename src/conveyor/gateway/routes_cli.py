"""``conveyor llm route show|set|history|rollback|delete``: the gateway's routes kept in
the store (see :mod:`conveyor.gateway.routes_store`)."""

from __future__ import annotations

from typing import Annotated, Any

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

AliasArg = Annotated[str, typer.Argument(help="The model alias requests name.")]


def _line(route: dict[str, Any]) -> str:
    weights = ", ".join(f"{k}={v:g}" for k, v in route["weights"].items())
    rules = "; ".join(
        f"{rule.get('name') or f'rule-{i}'}: {rule.get('when') or {}} -> "
        + (rule["to"] if rule.get("to") else ",".join(rule.get("deployments", [])))
        for i, rule in enumerate(route["rules"], 1)
    )
    return (
        f"{route['alias']} -> {' -> '.join(route['deployments'])}"
        + (f" (weights {weights})" if weights else "")
        + (f" [rules {rules}]" if rules else "")
        + f"  r{route['revision']} by {route['actor'] or '?'} at {route['updated_at']}"
        + (f": {route['reason']}" if route.get("reason") else "")
    )


def _rules(text: str | None) -> list[dict[str, Any]] | None:
    """``--rules``: a JSON or YAML list, or @FILE holding one."""
    if text is None:
        return None
    from pathlib import Path

    import yaml

    from conveyor.errors import InvalidInputError

    source = text
    if text.startswith("@"):
        try:
            source = Path(text[1:]).read_text()
        except OSError as exc:
            raise InvalidInputError(f"--rules {text}: {exc}", field="rules") from None
    try:
        found = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"--rules is not JSON or YAML: {exc}", field="rules") from None
    if not isinstance(found, list):
        raise InvalidInputError("--rules is a list of rules", field="rules")
    return found


@route_app.command("show")
@errors
def show_cmd(
    alias: Annotated[str | None, typer.Argument(help="Only this alias's route.")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The routes kept in the store (each overrides the spec's alias of the same name)."""
    from conveyor.gateway.routes_store import LlmRoutes

    with open_project(project) as proj:
        stored = LlmRoutes(proj.store)
        routes = [stored.get(alias)] if alias is not None else list(stored.all().values())
    if as_json:
        if alias is not None:
            echo_json(routes[0])
        else:
            echo_list(routes)
        return
    if not routes:
        typer.echo("no stored routes: the spec's gateway.models route every alias")
        return
    for route in routes:
        typer.echo(_line(route))


@route_app.command("set")
@errors
def set_cmd(
    alias: AliasArg,
    to: Annotated[str, typer.Option("--to", help="Deployments, in fallback order: a,b.")],
    weight: Annotated[
        list[str] | None, typer.Option(help="A weighted split: NAME=WEIGHT (repeat).")
    ] = None,
    rules: Annotated[
        str | None,
        typer.Option(
            help="Routing rules, a JSON or YAML list (or @FILE): "
            '[{"when": {"complexity": "complex"}, "to": "smart"}].'
        ),
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why, kept in the history.")] = None,
    revision: Annotated[
        int | None,
        typer.Option(help="Only if the route is at this revision (0: only if it has none)."),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Route ALIAS to deployments of the spec (with weights and rules); every server
    follows within seconds, with no restart."""
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
    found_rules = _rules(rules)
    with open_project(project) as proj:
        actor = authorized(proj, "llm.manage")
        route = LlmRoutes(proj.store, proj.events).set(
            gateway_of(proj.spec),
            alias,
            [d.strip() for d in to.split(",") if d.strip()],
            weights,
            found_rules,
            actor=actor,
            reason=reason,
            expected=revision,
        )
    if as_json:
        echo_json(route)
    else:
        typer.echo(_line(route))


@route_app.command("history")
@errors
def history_cmd(
    alias: AliasArg,
    limit: Annotated[int, typer.Option(help="The newest N routes.")] = 20,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every route ALIAS has had in the store, newest first."""
    from conveyor.gateway.routes_store import LlmRoutes

    with open_project(project) as proj:
        found = LlmRoutes(proj.store).history(alias, limit=limit)
    if as_json:
        echo_list(found)
        return
    if not found:
        typer.echo(f"{alias} never had a stored route")
    for route in found:
        typer.echo(_line(route))


@route_app.command("rollback")
@errors
def rollback_cmd(
    alias: AliasArg,
    reason: Annotated[str | None, typer.Option(help="Why, kept in the history.")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give ALIAS the stored route it had before its last change."""
    from conveyor.gateway.routes_store import LlmRoutes

    with open_project(project) as proj:
        actor = authorized(proj, "llm.manage")
        route = LlmRoutes(proj.store, proj.events).rollback(alias, actor=actor, reason=reason)
    if as_json:
        echo_json(route)
    else:
        typer.echo(_line(route))


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
