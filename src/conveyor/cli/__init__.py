"""The ``conveyor`` command line.

Each command imports its capability inside the function, so ``conveyor
--help`` loads typer and nothing else. Every command follows the same rules
(:mod:`conveyor.cli.common`): ``--json`` prints an object, or a list as
``{"items": [...], "next_cursor": ...}``; exit 0 when done, 1 on an error
(printed as one clear line, or as ``{"error": {...}}`` with ``--json``), 3
when a check failed; durations are written ``45s``, ``30m``, ``12h``, ``7d``.
Anything but a Conveyor error is a bug and keeps its traceback.
"""

from __future__ import annotations

import copy
import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

# Plain help, as git's and kubectl's: typer's rich help imports rich's markdown renderer
# (0.12 s), more than the rest of `conveyor --help`. TYPER_USE_RICH=1 brings it back.
os.environ.setdefault("TYPER_USE_RICH", "0")

import typer

from conveyor.cli.common import (
    DEBUG_ENV,
    EXIT_CHECK_FAILED,
    CursorOpt,
    JsonOpt,
    ProjectOpt,
    authorized,
    console,
    echo_json,
    echo_list,
    echo_report,
    errors,
    open_project,
    parse_since,
    print_table,
    when,
)

if TYPE_CHECKING:
    from conveyor.store.runs import Run

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


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="On an error, print the full traceback (also: CONVEYOR_DEBUG=1).",
        ),
    ] = False,
    environment: Annotated[
        str | None,
        typer.Option(
            "--env",
            help="Run against this environment of the spec (dev, staging, prod...): its "
            "backend URLs and settings (also: CONVEYOR_ENV).",
        ),
    ] = None,
) -> None:
    # A callback keeps `conveyor` a group when main() mounts only the invoked command.
    if environment:
        from conveyor.config import ENVIRONMENT_ENV

        # read by every load_spec of this process: the environment's URLs and settings
        os.environ[ENVIRONMENT_ENV] = environment
    if debug:
        os.environ[DEBUG_ENV] = "1"


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
    template: Annotated[
        str,
        typer.Option(
            help="classification | regression: the quality metric (roc_auc, r2) and the task "
            "of the commented models: stub."
        ),
    ] = "classification",
) -> None:
    """Create conveyor.yaml (commented) and the .conveyor/ state folder."""
    from conveyor.events.catalogue import PROJECT_INITIALIZED
    from conveyor.project import Project, init_project

    spec_path = init_project(path, name=name, force=force, template=template)
    with Project.open(spec_path.parent) as project:
        project.events.record(
            PROJECT_INITIALIZED,
            subject=project.name,
            actor=authorized(project, None),
            payload={"spec": str(spec_path)},
        )
    typer.echo(f"Created {spec_path} and {spec_path.parent / '.conveyor'}/")
    typer.echo("Next: `conveyor doctor` checks every backend.")


@app.command()
@errors
def doctor(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Check each seam: its configured backend, reachable or not, and why. Exit 3 if one fails."""
    from conveyor.config import load_spec
    from conveyor.doctor import check_seams

    spec = load_spec(project)
    results = check_seams(spec)
    extra = _capability_checks(spec)
    ok = all(r.ok for r in results) and all(row["ok"] for _, rows in extra for row in rows)
    if as_json:
        echo_json(
            {
                "project": spec.project,
                "root": str(spec.root),
                "ok": ok,
                "seams": [r.to_dict() for r in results],
                **{name: rows for name, rows in extra},
            }
        )
    else:
        from rich.table import Table

        table = Table(title=f"conveyor doctor: {spec.project} ({spec.root})", title_justify="left")
        for column in ("seam", "backend", "url", "status", "ms", "detail"):
            table.add_column(column, overflow="fold")
        for r in results:
            status = "[green]OK[/]" if r.ok else "[bold red]FAIL[/]"
            table.add_row(r.seam, r.backend, r.url, status, f"{r.latency_ms:.0f}", r.detail)
        console().print(table)
        for name, rows in extra:
            if not rows:
                continue
            more = Table(title=name, title_justify="left")
            columns = [c for c in rows[0] if c != "ok"]
            for column in (*columns, "status"):
                more.add_column(column, overflow="fold")
            for row in rows:
                status = "[green]OK[/]" if row["ok"] else "[bold red]FAIL[/]"
                more.add_row(*(str(row[c]) for c in columns), status)
            console().print(more)
    if not ok:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _capability_checks(spec: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """What each capability adds to the doctor (Capability.doctor)."""
    from conveyor.capability import contributed, load

    found = []
    for _, target in contributed("doctor"):
        name, rows = load(target)(spec)
        found.append((name, rows))
    return found


@app.command("spec")
@errors
def spec_fields(
    part: Annotated[
        str | None,
        typer.Argument(
            help="A part of the reference instead of the settings: sources, expectations, "
            "types, metrics, gates (those of the capabilities installed)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every setting of conveyor.yaml: its type, default and environment variable.

    Any field can be set from the environment, ``CONVEYOR_SERVING__PORT=8080``
    for ``serving.port`` (lists and mappings as JSON); ``<name>`` stands for an
    entry of ``models:`` or ``datasets:`` (``CONVEYOR_MODELS__FRAUD__TARGET``).
    ``conveyor spec expectations`` lists every expectation kind and its options,
    ``conveyor spec metrics`` every metric name, and so on.
    """
    from conveyor.spec_reference import PARTS, settings

    if part is not None:
        chosen = PARTS.require(part, field="part")
        title, columns, rows = chosen.title, chosen.columns, chosen.rows()
    else:
        found = settings()
        title = "conveyor.yaml settings"
        columns = ("field", "type", "default", "environment", "meaning")
        rows = [(s.path, s.type, s.default, s.variable, s.description) for s in found]
    if as_json:
        if part is None:
            echo_list(s.to_dict() for s in found)
        else:
            echo_list(dict(zip(columns, row, strict=True)) for row in rows)
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(v) for v in row))
    console().print(table)


@events_app.command("tail")
@errors
def events_tail(
    n: Annotated[int, typer.Option("-n", "--lines", help="How many recent events.")] = 20,
    kind: Annotated[str | None, typer.Option(help="Kind, or a prefix like 'run.*'.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only events about this subject.")] = None,
    since: Annotated[
        str | None, typer.Option(help="An age like 30m, 12h, 7d, or an ISO time.")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing new events (with --json: one per line)."
        ),
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the most recent events (and, with -f, new ones as they arrive).

    With ``--json``: the usual list envelope; with ``--json -f``, a stream of
    events, one JSON object per line, as they arrive.
    """
    filters: dict[str, Any] = {"kind": kind, "subject": subject, "since": parse_since(since)}
    with open_project(project) as proj:
        log = proj.events
        recent = log.latest(n, **filters)
        if as_json and not follow:
            echo_list(e.to_dict() for e in recent)
            return
        printer = _EventPrinter(as_json)
        for event in recent:
            printer(event)
        if follow:
            try:
                for event in log.follow(after=recent[-1] if recent else None, **filters):
                    printer(event)
            except KeyboardInterrupt:
                pass


@events_app.command("kinds")
@errors
def events_kinds(as_json: JsonOpt = False) -> None:
    """List the event kinds Conveyor and its capabilities write: durability, payload fields.

    ``audit`` kinds are committed before the action returns, ``control`` ones are
    buffered and never dropped, ``telemetry`` never makes a request wait. A field
    marked ``?`` may be missing from the payload.
    """
    from conveyor.events.catalogue import describe, kinds

    described = [describe(event) for event in kinds().values()]
    if as_json:
        echo_list(described)
        return
    from rich.table import Table

    table = Table(title="event kinds", title_justify="left")
    for column in ("kind", "durability", "fields", "capability", "description"):
        table.add_column(column, overflow="fold")
    for item in described:
        optional = set(item["optional"])
        fields = ", ".join(
            f"{name}{'?' if name in optional else ''}: {type_}"
            for name, type_ in item["fields"].items()
        )
        table.add_row(
            item["name"], item["durability"], fields, item["capability"], item["description"]
        )
    console().print(table)


class _EventPrinter:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = console()

    def __call__(self, event: Any) -> None:
        if self.as_json:  # a stream: one compact object per line
            import orjson

            typer.echo(orjson.dumps(event.to_dict(), default=str).decode())
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
    status: Annotated[
        str | None, typer.Option(help="Only runs in this status (running, succeeded, ...).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Only runs of this name.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    cursor: CursorOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first."""
    with open_project(project) as proj:
        page = proj.store.runs.list(
            kind=kind,
            status=status,  # type: ignore[arg-type]  # checked by the repository
            name=name,
            limit=limit,
            cursor=cursor,
        )
        if as_json:
            echo_list((r.to_dict() for r in page.items), page.next_cursor)
            return
        from rich.table import Table

        table = Table(title="runs", title_justify="left")
        for column in ("id", "kind", "name", "status", "started", "metrics"):
            table.add_column(column, overflow="fold")
        for r in page.items:
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(r.metrics.items()))
            table.add_row(
                r.id,
                r.kind,
                r.name,
                r.status,
                when(r.started_at),
                metrics,
            )
        print_table(table, page.next_cursor)


@runs_app.command("show")
@errors
def runs_show(
    run_id: Annotated[str, typer.Argument(help="The run's id (see `runs list`).")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one run: status, params, metrics, tags, artifacts, error, parent and step runs."""
    with open_project(project) as proj:
        runs = proj.store.runs
        run = runs.get(run_id)
        parent = runs.get(run.parent_id) if run.parent_id else None
        steps = runs.children(run.id)
    if as_json:
        echo_json(
            {
                **run.to_dict(),
                "parent": parent.to_dict() if parent else None,
                "steps": [s.to_dict() for s in steps],
            }
        )
        return
    _print_run(run, parent, steps)


def _print_run(run: Run, parent: Run | None, steps: list[Run]) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    took = (
        ""
        if run.ended_at is None
        else f" in {(run.ended_at - run.started_at).total_seconds():.2f} s"
    )
    out.print(
        f"[bold]{escape(run.kind)} {escape(run.name)}[/] {run.id}: {run.status}{took}"
        + (f" (attempt {run.attempt})" if run.attempt > 1 else ""),
        soft_wrap=True,
    )
    out.print(f"  started: {when(run.started_at)}  ended: {when(run.ended_at)}")
    if parent is not None:
        out.print(
            f"  parent: {parent.id} ({escape(parent.kind)} {escape(parent.name)}, {parent.status})",
            soft_wrap=True,
        )
    for label, values in (("params", run.params), ("metrics", run.metrics), ("tags", run.tags)):
        shown = ", ".join(f"{k}={_value(v)}" for k, v in sorted(values.items())) or "-"
        out.print(f"  {label}: {escape(shown)}", soft_wrap=True)
    if run.artifacts:
        out.print("  artifacts:")
        for name, entry in sorted(run.artifacts.items()):
            out.print(
                f"    {escape(name)}: {entry.get('digest', '-')} ({entry.get('size', '?')} bytes)",
                soft_wrap=True,
            )
    if run.error:
        out.print(f"  [red]error: {escape(run.error)}[/]", soft_wrap=True)
    if steps:
        table = Table(title="steps", title_justify="left")
        for column in ("id", "name", "status", "attempt", "started", "error"):
            table.add_column(column, overflow="fold")
        for step in steps:
            error = (step.error or "").strip().splitlines()
            table.add_row(
                step.id,
                escape(step.name),
                step.status,
                str(step.attempt),
                when(step.started_at),
                escape(error[0] if error else ""),
            )
        out.print(table)


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@reports_app.command("list")
@errors
def reports_list(
    subject: Annotated[str | None, typer.Option(help="Only reports about this subject.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only reports of this kind.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    cursor: CursorOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List check reports, newest first."""
    from conveyor.checks.persist import list_reports

    with open_project(project) as proj:
        page = list_reports(proj.store, subject=subject, kind=kind, limit=limit, cursor=cursor)
        if as_json:
            echo_list((r.to_dict() for r in page.items), page.next_cursor)
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
        print_table(table, page.next_cursor)


@reports_app.command("show")
@errors
def reports_show(
    report_id: Annotated[str, typer.Argument(help="The report's id (see `reports list`).")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one report's checks."""
    from conveyor.checks.persist import get_report

    with open_project(project) as proj:
        echo_report(get_report(proj.store, report_id), as_json)


def _mount_capabilities() -> None:
    """Each capability's commands (:attr:`conveyor.capability.Capability.cli`): a typer app
    mounted as ``conveyor NAME``, its commands at the top level when it has no name, a
    single function as ``conveyor NAME``, or as ``conveyor GROUP NAME`` in a group of the
    root (``events compact``)."""
    from conveyor.capability import contributed, load

    groups = {g.name: g.typer_instance for g in app.registered_groups if g.name}
    for _, commands in contributed("cli"):
        for command in commands:
            target = load(command.target)
            group, _, name = (command.name or "").rpartition(" ")
            if group:
                found = groups.get(group)
                if found is None or isinstance(target, typer.Typer):
                    from conveyor.errors import ConfigError

                    raise ConfigError(
                        f"{command.target} cannot be mounted as {command.name!r}: the CLI has "
                        f"no group {group!r}, or the target is a group itself"
                    )
                found.command(name)(target)
            elif isinstance(target, typer.Typer):
                app.add_typer(target, name=command.name)
            else:
                app.command(command.name)(target)


_mount_capabilities()

__all__ = ["app", "main", "parse_since"]


def _only_invoked(root: typer.Typer, argv: list[str]) -> typer.Typer:
    """``root`` with only the command ``argv`` invokes, when it names one.

    Typer builds every command's parameters before it parses anything (about 1.4 ms a
    command, a hundred commands); ``conveyor rollback`` needs one. An unknown name, an
    option first or no argument keeps everything, so help and "No such command" (with its
    suggestions) are click's own."""
    if not argv or argv[0] in ("--help", "-h"):
        return _listing(root)
    if argv[0].startswith("-"):
        return root
    pruned = _pruned(root, argv[0])
    return root if pruned is None else pruned


def _listing(app: typer.Typer) -> typer.Typer:
    """A copy of ``app`` that lists the same commands and groups with the same help, but
    whose commands take no parameter: all that ``conveyor --help`` prints."""

    def stub(info: Any) -> Any:
        callback = info.callback

        def listed() -> None:  # pragma: no cover: a listing never runs a command
            raise AssertionError("a listing runs nothing")

        listed.__name__ = getattr(callback, "__name__", "command")
        listed.__doc__ = getattr(callback, "__doc__", None)
        listed_info = copy.copy(info)
        listed_info.callback = listed
        return listed_info

    listing = copy.copy(app)
    listing.registered_commands = [stub(c) for c in app.registered_commands]
    groups = []
    for g in app.registered_groups:
        group = copy.copy(g)
        if g.typer_instance is not None:
            if g.name is None:
                group.typer_instance = _listing(g.typer_instance)
            else:
                group.typer_instance = copy.copy(g.typer_instance)
                group.typer_instance.registered_commands = []
                group.typer_instance.registered_groups = []
        groups.append(group)
    listing.registered_groups = groups
    return listing


def _pruned(app: typer.Typer, name: str) -> typer.Typer | None:
    """A copy of ``app`` holding only ``name`` (searched in its nameless groups too, whose
    commands typer mounts at the top level); None when ``app`` has no such command."""
    commands = [
        c
        for c in app.registered_commands
        if (c.name or typer.main.get_command_name(getattr(c.callback, "__name__", ""))) == name
    ]
    groups = []
    for g in app.registered_groups:
        if g.name == name:
            groups.append(g)
        elif g.name is None and g.typer_instance is not None:
            inner = _pruned(g.typer_instance, name)
            if inner is not None:
                groups.append(copy.copy(g))
                groups[-1].typer_instance = inner
    if not commands and not groups:
        return None
    pruned = copy.copy(app)
    pruned.registered_commands, pruned.registered_groups = commands, groups
    return pruned


def _debug_flag(argv: list[str]) -> list[str]:
    """``argv`` without ``--debug``, which may come anywhere before ``--`` (``conveyor train
    risk --debug``); seen, it sets ``CONVEYOR_DEBUG=1`` for the command's errors."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" not in argv[:end]:
        return argv
    os.environ[DEBUG_ENV] = "1"
    return [a for a in argv[:end] if a != "--debug"] + argv[end:]


def _env_flag(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` without ``--env NAME`` (or ``--env=NAME``), which may come anywhere before
    ``--`` (``conveyor smoke --env staging``, ``conveyor --env prod rollback fraud``), and
    the environment it named (the last one given), if any."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept: list[str] = []
    chosen: str | None = None
    index = 0
    while index < end:
        arg = argv[index]
        if arg == "--env" and index + 1 < end:
            chosen, index = argv[index + 1], index + 2
        elif arg.startswith("--env="):
            chosen, index = arg.partition("=")[2], index + 1
        else:
            kept.append(arg)
            index += 1
    return kept + argv[end:], chosen


def main() -> None:
    argv, environment = _env_flag(_debug_flag(sys.argv[1:]))
    if environment:
        from conveyor.config import ENVIRONMENT_ENV

        os.environ[ENVIRONMENT_ENV] = environment  # read by every spec the command loads
    command = _only_invoked(app, argv)
    if not argv or argv[0] != "serve":
        # the entry point (conveyor._start) keeps the collector off through start-up;
        # the server turns it on once its own start-up is over
        gc.enable()
    command(args=argv, prog_name="conveyor")


if __name__ == "__main__":
    main()
