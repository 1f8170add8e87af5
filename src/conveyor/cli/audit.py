"""``conveyor audit``: the audit trail, newest first (needs the ``audit.read`` role)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.cli.common import (
    CursorOpt,
    JsonOpt,
    ProjectOpt,
    authorized,
    echo_list,
    errors,
    open_project,
    parse_since,
    print_table,
    when,
)

__all__ = ["audit"]


@errors
def audit(
    by: Annotated[
        str | None, typer.Option("--actor", help="Only what this caller did (key:NAME).")
    ] = None,
    subject: Annotated[str | None, typer.Option(help="Only events about this subject.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this audit kind.")] = None,
    since: Annotated[str | None, typer.Option(help="Age like 7d, or an ISO time.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    cursor: CursorOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Who changed what: keys, aliases, routes, deletions (every audit event, newest first)."""
    from rich.markup import escape
    from rich.table import Table

    from conveyor.governance.audit import audit_trail

    with open_project(project) as proj:
        authorized(proj, "audit.read")
        page = audit_trail(
            proj.events,
            by=by,
            subject=subject,
            kind=kind,
            since=parse_since(since),
            limit=limit,
            cursor=cursor,
        )
    if as_json:
        echo_list((e.to_dict() for e in page.items), page.next_cursor)
        return
    table = Table(title="audit trail", title_justify="left")
    for column in ("time", "kind", "subject", "actor", "details"):
        table.add_column(column, overflow="fold")
    for event in page.items:
        table.add_row(
            when(event.time),
            event.kind,
            escape(event.subject or "-"),
            escape(event.actor or "-"),
            escape(_details(event.payload)),
        )
    print_table(table, page.next_cursor)


def _details(payload: Any) -> str:
    import orjson

    text = orjson.dumps(payload).decode()
    return text if len(text) <= 120 else text[:117] + "..."
