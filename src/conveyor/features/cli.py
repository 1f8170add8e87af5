"""``conveyor features ...``: the feature store's definitions and its online side.

::

    conveyor features apply            # check against the sources, version what changed
    conveyor features materialize      # what is new since the watermark, into backends.online
    conveyor features materialize --full
    conveyor features push spend --file rows.jsonl    # or .parquet, .csv, or - (stdin)
    conveyor features get fraud -e customer_id=42
    conveyor features parity fraud     # online against offline for sampled keys
    conveyor features list             # the latest version of each definition
    conveyor features show view customer_spend [--version 1]
    conveyor features history view customer_spend
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

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

if TYPE_CHECKING:
    from conveyor.features.materialize import Progress

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
    full: Annotated[
        bool, typer.Option("--full", help="Rewrite every row and reset the watermark.")
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write what is new in each view since its watermark (everything with --full) to the
    online store, in chunks with a checkpoint after each (a run that died is continued),
    and its aggregates as of now; a newer row already stored is kept."""
    from conveyor.features.materialize import materialize

    with open_project(project) as proj:
        who = authorized(proj, "features.materialize")
        mode: Literal["full", "incremental"] = "full" if full else "incremental"
        if as_json:
            done = materialize(proj, views, mode=mode, actor=who)
        else:
            with _Bar() as bar:
                done = materialize(proj, views, mode=mode, actor=who, progress=bar.update)
    if as_json:
        echo_list(m.to_dict() for m in done)
        return
    for m in done:
        how = f"{m.mode}, resumed after {m.skipped_chunks:,} chunks" if m.resumed else m.mode
        typer.echo(
            f"{m.view}: {m.rows:,} rows read ({how}), {m.entities:,} entities: "
            f"{m.written:,} written, {m.kept:,} kept (newer online), {m.expired:,} past their "
            f"TTL; watermark {when(m.watermark_before)} -> {when(m.watermark_after)}"
            + (f"; aggregates of {m.aggregates:,} entities" if m.aggregates else "")
        )


class _Bar:
    """A progress bar per view on stderr: rows and chunks written."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, p: Progress) -> None:
        task = self.tasks.get(p.view)
        if task is None:
            task = self.tasks[p.view] = self.progress.add_task(p.view, total=p.total, note="")
        after = {"rows": "", "aggregates": ", aggregates", "done": ", done"}[p.phase]
        note = f"{p.chunks}/{p.chunk_total} chunks{after}"
        self.progress.update(task, completed=p.rows, total=p.total, note=note)


@features_app.command("push")
@errors
def push_cmd(
    view: Annotated[str, typer.Argument(help="The view the rows belong to.")],
    file: Annotated[
        str,
        typer.Option(
            "--file",
            "-f",
            help="JSON lines, Parquet (.parquet) or CSV (.csv); - reads JSON lines from stdin.",
        ),
    ],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write rows of VIEW (its join keys, times and features) online at once and to its
    offline log; every row is checked first, and one bad value writes nothing."""
    with open_project(project) as proj:
        who = authorized(proj, "features.push")
        pushed = proj.features.push(view, _read_rows(file), actor=who)
    if as_json:
        echo_json(pushed.to_dict())
        return
    typer.echo(
        f"{pushed.view}: {pushed.rows:,} rows pushed: {pushed.written:,} written online, "
        f"{pushed.kept:,} kept (newer online), {pushed.expired:,} past their TTL; "
        + ("logged offline" if pushed.logged else "already in the offline log (the same rows)")
    )


def _read_rows(file: str) -> Any:
    import sys
    from pathlib import Path

    import orjson

    from conveyor.errors import InvalidInputError

    if file != "-":
        path = Path(file)
        if not path.is_file():
            raise InvalidInputError(f"--file {file}: no such file", field="file")
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq", ".csv"):
            import pyarrow as pa
            import pyarrow.csv as pcsv
            import pyarrow.parquet as pq

            try:
                return pcsv.read_csv(path) if suffix == ".csv" else pq.read_table(path)
            except (pa.ArrowInvalid, OSError) as exc:
                raise InvalidInputError(f"--file {file}: {exc}", field="file") from exc
        lines = path.read_bytes().splitlines()
    else:
        lines = sys.stdin.buffer.read().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(
                f"--file {file}: line {number} is not JSON: {exc}", field="file", line=number
            ) from exc
    return rows


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
