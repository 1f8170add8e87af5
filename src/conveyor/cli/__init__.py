"""The ``conveyor`` command line.

Each command imports its capability inside the function, so ``conveyor
--help`` loads typer and nothing else. Errors from Conveyor are printed as
one clear line (``--json`` commands print the error's JSON) and exit 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor.cli.common import (
    JsonOpt,
    ProjectOpt,
    actor,
    console,
    errors,
    open_project,
    parse_since,
    when,
)

app = typer.Typer(
    name="conveyor",
    help="Conveyor: take an AI system from a working prototype to production.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
events_app = typer.Typer(help="Read the event log.", no_args_is_help=True)
runs_app = typer.Typer(help="List and show runs.", no_args_is_help=True)
reports_app = typer.Typer(help="List and show check reports.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(runs_app, name="runs")
app.add_typer(reports_app, name="reports")


@app.command()
@errors
def version() -> None:
    """Print Conveyor's version."""
    from conveyor._version import __version__

    typer.echo(f"conveyor {__version__}")


@app.command()
@errors
def init(
    path: Annotated[Path, typer.Argument(help="Folder for the new project.")] = Path("."),
    name: Annotated[str | None, typer.Option(help="Project name (default: the folder's).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing conveyor.yaml.")] = False,
) -> None:
    """Create conveyor.yaml (commented) and the .conveyor/ state folder."""
    from conveyor.project import Project, init_project

    spec_path = init_project(path, name=name, force=force)
    with Project.open(spec_path.parent) as project:
        project.events.emit(
            "project.initialized",
            subject=project.name,
            actor=actor(),
            payload={"spec": str(spec_path)},
            durable=True,
        )
    typer.echo(f"Created {spec_path} and {spec_path.parent / '.conveyor'}/")
    typer.echo("Next: `conveyor doctor` checks every backend.")


@app.command()
@errors
def doctor(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Check each seam: its configured backend, reachable or not, and why."""
    from conveyor.config import load_spec
    from conveyor.doctor import check_seams

    spec = load_spec(project)
    results = check_seams(spec)
    if as_json:
        import orjson

        body = {
            "project": spec.project,
            "root": str(spec.root),
            "ok": all(r.ok for r in results),
            "seams": [r.to_dict() for r in results],
        }
        typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    else:
        from rich.table import Table

        table = Table(title=f"conveyor doctor: {spec.project} ({spec.root})", title_justify="left")
        for column in ("seam", "backend", "url", "status", "ms", "detail"):
            table.add_column(column, overflow="fold")
        for r in results:
            status = "[green]OK[/]" if r.ok else "[bold red]FAIL[/]"
            table.add_row(r.seam, r.backend, r.url, status, f"{r.latency_ms:.0f}", r.detail)
        console().print(table)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@events_app.command("tail")
@errors
def events_tail(
    n: Annotated[int, typer.Option("-n", "--lines", help="How many recent events.")] = 20,
    kind: Annotated[str | None, typer.Option(help="Kind, or a prefix like 'run.*'.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only events about this subject.")] = None,
    since: Annotated[str | None, typer.Option(help="Age like 15m, 2h, 7d, or an ISO time.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the most recent events (and, with -f, new ones as they arrive)."""
    filters: dict[str, Any] = {"kind": kind, "subject": subject, "since": parse_since(since)}
    with open_project(project) as proj:
        log = proj.events
        recent = log.latest(n, **filters)
        printer = _EventPrinter(as_json)
        for event in recent:
            printer(event)
        if follow:
            try:
                for event in log.follow(after=recent[-1] if recent else None, **filters):
                    printer(event)
            except KeyboardInterrupt:
                pass


class _EventPrinter:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = console()

    def __call__(self, event: Any) -> None:
        if self.as_json:
            import orjson

            typer.echo(orjson.dumps(event.to_dict()).decode())
            return
        import orjson
        from rich.markup import escape

        version = f"@{event.subject_version}" if event.subject_version else ""
        payload = orjson.dumps(event.payload).decode()
        if len(payload) > 160:
            payload = payload[:157] + "..."
        self.console.print(
            f"[dim]{event.time.isoformat(timespec='milliseconds')}[/] "
            f"[bold cyan]{event.kind}[/] {escape(event.subject or '-')}{escape(version)} "
            f"[dim]{escape(payload)}[/]",
            soft_wrap=True,
        )


@runs_app.command("list")
@errors
def runs_list(
    kind: Annotated[str | None, typer.Option(help="Only runs of this kind.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first."""
    with open_project(project) as proj:
        page = proj.store.runs.list(kind=kind, limit=limit)
        if as_json:
            import orjson

            typer.echo(orjson.dumps([r.to_dict() for r in page.items]).decode())
            return
        from rich.table import Table

        table = Table(title="runs", title_justify="left")
        for column in ("id", "kind", "name", "status", "started", "metrics"):
            table.add_column(column, overflow="fold")
        for r in page.items:
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(r.metrics.items()))
            table.add_row(
                r.id[:12],
                r.kind,
                r.name,
                r.status,
                when(r.started_at),
                metrics,
            )
        console().print(table)


@reports_app.command("list")
@errors
def reports_list(
    subject: Annotated[str | None, typer.Option(help="Only reports about this subject.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only reports of this kind.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List check reports, newest first."""
    from conveyor.checks.persist import list_reports

    with open_project(project) as proj:
        page = list_reports(proj.store, subject=subject, kind=kind, limit=limit)
        if as_json:
            import orjson

            typer.echo(orjson.dumps([r.to_dict() for r in page.items]).decode())
            return
        from rich.table import Table

        table = Table(title="reports", title_justify="left")
        for column in ("id", "kind", "subject", "verdict", "checks", "created"):
            table.add_column(column, overflow="fold")
        for r in page.items:
            table.add_row(
                r.id,
                r.kind,
                r.subject,
                r.verdict,
                str(len(r.checks)),
                when(r.created_at),
            )
        console().print(table)


@reports_app.command("show")
@errors
def reports_show(
    report_id: Annotated[str, typer.Argument(help="The report's id (see `reports list`).")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one report's checks."""
    from conveyor.checks.persist import get_report
    from conveyor.checks.render import print_report

    with open_project(project) as proj:
        print_report(get_report(proj.store, report_id), console(), as_json=as_json)


def _mount_capabilities() -> None:
    """Each capability's commands (:attr:`conveyor.capability.Capability.cli`): a typer app
    mounted as ``conveyor NAME``, its commands at the top level when it has no name, or a
    single function as ``conveyor NAME``."""
    from conveyor.capability import contributed, load

    for _, commands in contributed("cli"):
        for command in commands:
            target = load(command.target)
            if isinstance(target, typer.Typer):
                app.add_typer(target, name=command.name)
            else:
                app.command(command.name)(target)


_mount_capabilities()

__all__ = ["app", "main", "parse_since"]


def main() -> None:
    app(prog_name="conveyor")


if __name__ == "__main__":
    main()
