"""``conveyor keys ...``: create, list and revoke the API keys of the model server.

::

    conveyor keys create admin --role admin             # the first key: bootstrap
    export CONVEYOR_API_KEY=cvy_...                      # from now on, commands need a key
    conveyor keys create ci --role deployer --rate 50 --burst 100 --expires 90d
    conveyor keys list
    conveyor keys revoke ci

Who may run these commands (every ``keys`` command needs the ``admin`` role):

- ``CONVEYOR_API_KEY`` set: the key must verify (known, not revoked, not
  expired) and its role must allow the action, else the command fails
  (``unauthenticated`` or ``forbidden``) and changes nothing.
- no key was ever created in the project: local use is allowed without one.
  This is how the first admin key is created; creating it ends the bootstrap
  (revoking every key later does not reopen it).
- keys exist but ``CONVEYOR_API_KEY`` is not set: refused, asking for one.

This is a guard for a shared project, not a wall against someone who can
write the metadata store directly. Every create and revoke is an audit event
(``auth.key_created``, ``auth.key_revoked``) naming the actor; the secret is
printed once and stored nowhere, only its sha256. See ``docs/security.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from conveyor.cli.common import (
    API_KEY_ENV,
    DURATION_FORMS,
    JsonOpt,
    ProjectOpt,
    authorized,
    console,
    echo_json,
    echo_list,
    errors,
    open_project,
    parse_duration,
    when,
)
from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.governance.keys import ApiKey, ApiKeys
    from conveyor.project import Project

__all__ = ["API_KEY_ENV", "keys_app"]

keys_app = typer.Typer(
    help="API keys of the model server: create, list, revoke.", no_args_is_help=True
)


def _keys(proj: Project) -> ApiKeys:
    from conveyor.governance.keys import ApiKeys

    return ApiKeys(proj.store, proj.events, cache_ttl=0)


def _limits(key: ApiKey) -> str:
    if key.rate_per_second is None:
        return "unlimited"
    return f"{key.rate_per_second:g}/s, burst {key.burst}"


@keys_app.command("create")
@errors
def create(
    name: Annotated[str, typer.Argument(help="A unique name, e.g. the client using it.")],
    role: Annotated[str, typer.Option(help="viewer, predictor, deployer or admin.")],
    rate: Annotated[
        float | None, typer.Option(help="Sustained requests per second (default: unlimited).")
    ] = None,
    burst: Annotated[
        int | None, typer.Option(help="Requests allowed at once (default: one second's worth).")
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(help=f"Expire after this long, {DURATION_FORMS} (default: never)."),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key and print its secret once: it is not stored and cannot be shown again."""
    from datetime import UTC, datetime

    expires_at = None
    if expires is not None:
        expires_at = datetime.now(UTC) + parse_duration(expires, "--expires")
    from conveyor.governance.roles import check_role

    with open_project(project) as proj:
        who = authorized(proj, "keys.manage")
        check_role(role)
        keys = _keys(proj)
        first = not keys.any()
        if first and role != "admin":
            raise InvalidInputError(
                f"the project's first key must be an admin key: once a key exists, every "
                f"command that changes something needs one, and only an admin key can create "
                f"more, so a first {role} key would lock you out. Create the admin key first "
                f"(`conveyor keys create admin --role admin`), set {API_KEY_ENV} to it, then "
                f"`conveyor keys create {name} --role {role}`",
                field="role",
                role=role,
            )
        token, key = keys.create(
            name,
            role,
            rate_per_second=rate,
            burst=burst,
            expires_at=expires_at,
            actor=who,
        )
    if as_json:
        echo_json({"token": token, "key": key.to_dict()})
        return
    typer.echo(
        f"Created API key {key.name!r}: role {key.role}, {_limits(key)}, "
        f"expires {when(key.expires_at) if key.expires_at else 'never'}."
    )
    typer.echo(token)
    typer.secho(
        "Copy it now: Conveyor stores only its hash and cannot show it again.",
        fg=typer.colors.YELLOW,
        err=True,
    )
    if first:
        typer.secho(
            f"This project has a key now: commands that change something need one "
            f"(export {API_KEY_ENV}=<the key above>). A client of `conveyor serve` gets "
            "its own: `conveyor keys create NAME --role predictor`.",
            fg=typer.colors.YELLOW,
            err=True,
        )


@keys_app.command("list")
@errors
def list_cmd(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """List every key (revoked ones too): name, prefix, role, limits, dates. Never secrets."""
    with open_project(project) as proj:
        authorized(proj, "keys.manage")
        found = _keys(proj).list()
    if as_json:
        echo_list(k.to_dict() for k in found)
        return
    from rich.table import Table

    table = Table(title="API keys", title_justify="left")
    for column in ("name", "prefix", "role", "limits", "created", "expires", "revoked"):
        table.add_column(column, overflow="fold")
    for k in found:
        table.add_row(
            k.name,
            k.prefix,
            k.role,
            _limits(k),
            when(k.created_at),
            when(k.expires_at),
            when(k.revoked_at),
        )
    console().print(table)


@keys_app.command("revoke")
@errors
def revoke(
    name: Annotated[str, typer.Argument(help="The key's name (see `keys list`).")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key: servers refuse it within seconds (their cache lives 5 s)."""
    with open_project(project) as proj:
        who = authorized(proj, "keys.manage")
        key = _keys(proj).revoke(name, actor=who)
    if as_json:
        echo_json(key.to_dict())
        return
    typer.echo(f"Revoked API key {key.name!r} ({key.prefix}...) at {when(key.revoked_at)}.")
