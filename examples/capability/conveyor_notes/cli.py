"""``conveyor notes add|list``: mounted by Conveyor's CLI from the capability's declaration."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli.common import JsonOpt, ProjectOpt, authorized, echo_list, errors, open_project

app = typer.Typer(help="Notes on any subject: add, list.", no_args_is_help=True)


@app.command("add")
@errors
def add(
    subject: Annotated[str, typer.Argument(help="What the note is about (fraud@3, loans...).")],
    text: Annotated[str, typer.Argument(help="The note.")],
    project: ProjectOpt = None,
) -> None:
    """Add a note (needs a key whose role allows notes.write, once the project has keys)."""
    with open_project(project) as proj:
        note = proj.notes.add(subject, text, actor=authorized(proj, "notes.write"))
    typer.echo(f"note {note.id} about {note.subject} by {note.author}")


@app.command("list")
@errors
def list_cmd(
    subject: Annotated[str | None, typer.Argument(help="Only notes about this.")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List notes, oldest first."""
    with open_project(project) as proj:
        authorized(proj, "notes.read")
        notes = proj.notes.list(subject)
    if as_json:
        echo_list(n.to_dict() for n in notes)
        return
    for note in notes:
        typer.echo(f"{note.created_at:%Y-%m-%d %H:%M} {note.subject}: {note.text} ({note.author})")
