"""``conveyor data ...``: ingest, validate, profile, drift, versions, quarantine, forget, keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor.cli.common import (
    CursorOpt,
    JsonOpt,
    ProjectOpt,
    authorized,
    check_failed,
    console,
    echo_json,
    echo_list,
    echo_report,
    errors,
    open_project,
    print_table,
    when,
)
from conveyor.errors import InvalidInputError

POLICIES = ("fail", "quarantine", "warn")
MODES = ("append", "replace", "upsert")
COMPARE = ("batch", "version")
QUARANTINE_STATUSES = ("pending", "replayed", "discarded")

data_app = typer.Typer(
    help="Data sets: ingest, validate, profile, drift, versions, forget.", no_args_is_help=True
)
quarantine_app = typer.Typer(
    help="Rows set aside by validation, with their reasons.", no_args_is_help=True
)
data_app.add_typer(quarantine_app, name="quarantine")

FileOpt = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="Read this CSV or Parquet file instead of the source."),
]


def _read_file(path: Path) -> Any:
    from conveyor.data.sources import CSVSource, ParquetSource

    source = ParquetSource(path) if path.suffix.lower() in (".parquet", ".pq") else CSVSource(path)
    return source.read().table


@data_app.command("ingest")
@errors
def ingest(
    dataset: Annotated[str, typer.Argument(help="Data set name (as in conveyor.yaml).")],
    file: FileOpt = None,
    policy: Annotated[str | None, typer.Option(help="fail | quarantine | warn")] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            help="append | replace | upsert (by the data set's key); default: its mode "
            "in conveyor.yaml, else append."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Ingest a batch even if a version already holds it.")
    ] = False,
    new: Annotated[
        bool,
        typer.Option("--new", help="Create an ad-hoc data set not declared in conveyor.yaml."),
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Extract, validate and store a batch as a new dataset version.

    Exit 3 when the batch failed its checks and was rejected (policy ``fail``).
    """
    from conveyor.checks.render import report_table

    chosen = _choice(policy, POLICIES, "--policy")
    chosen_mode = _choice(mode, MODES, "--mode")
    with open_project(project) as proj:
        who = authorized(proj, "data.ingest")
        with console().status(f"Ingesting {dataset}..."):
            data = _read_file(file) if file is not None else None
            result = proj.data.ingest(
                dataset, data, policy=chosen, mode=chosen_mode, new=new, force=force, actor=who
            )
        if as_json:
            echo_json(result.to_dict())
        else:
            out = console()
            if result.new_dataset is not None:
                _print_new_dataset(dataset, result.new_dataset)
            out.print(report_table(result.report))
            out.print(_ingest_line(result))
        if result.batch_rejected:
            check_failed()


def _ingest_line(result: Any) -> str:
    """``1,500 rows in: 1,500 stored as houses@2 (append; houses@2 holds 3,000 rows), 0 ...``"""
    quarantined = f"{result.rows_quarantined:,} quarantined" + (
        f" (batch {result.quarantine.id})" if result.quarantine else ""
    )
    if result.version is None:
        return f"{result.rows_in:,} rows in: 0 stored (no new version), {quarantined}"
    how = result.mode
    if result.mode == "upsert":
        how += f" by {', '.join(result.key)}: {result.rows_replaced:,} replaced"
    return (
        f"{result.rows_in:,} rows in: {result.rows_accepted:,} stored as {result.version.ref} "
        f"({how}; {result.version.ref} holds {result.rows_total:,} rows), {quarantined}"
    )


def _print_new_dataset(dataset: str, schema: dict[str, Any]) -> None:
    """The inferred schema of an ad-hoc data set, and the YAML that would declare it."""
    columns = schema["columns"]
    out = console()
    out.print(
        f"new data set {dataset!r} (not in conveyor.yaml: no expectations checked); "
        "inferred schema:"
    )
    width = max(len(c["name"]) for c in columns) if columns else 0
    for c in columns:
        out.print(f"  {c['name']:<{width}}  {c['type']}", markup=False, highlight=False)
    pairs = ", ".join(f"{c['name']}: {c['type']}" for c in columns)
    out.print("to check its next batches, declare it in conveyor.yaml:", highlight=False)
    declaration = f"datasets:\n  {dataset}:\n    expectations:\n"
    declaration += f"      - {{kind: schema, columns: {{{pairs}}}}}"
    out.print(declaration, markup=False, highlight=False)


@data_app.command("validate")
@errors
def validate_cmd(
    dataset: Annotated[str, typer.Argument(help="Data set name (as in conveyor.yaml).")],
    file: FileOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a batch against the data set's expectations without storing anything.

    Exit 3 when a check failed.
    """
    with open_project(project) as proj:
        proj.data.require_known(dataset, new=False)
        spec = proj.data.dataset_spec(dataset)
        if file is not None:
            table = _read_file(file)
        else:
            from conveyor.data.sources import source_from_spec

            if spec.source is None:
                raise InvalidInputError(
                    f"data set {dataset!r} has no source: pass --file", field="file"
                )
            table = (
                source_from_spec(spec.source, root=proj.root, where=f"datasets.{dataset}.source")
                .read()
                .table
            )
        result = proj.data.check(dataset, table)
        echo_report(result.report, as_json)
        if not result.report.passed:
            check_failed()


@data_app.command("versions")
@errors
def versions(
    dataset: Annotated[str | None, typer.Argument(help="Only this data set.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    cursor: CursorOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List dataset versions, newest first."""
    with open_project(project) as proj:
        page = proj.data.versions.list(dataset, limit=limit, cursor=cursor)
        if as_json:
            echo_list((v.to_dict() for v in page.items), page.next_cursor)
            return
        from rich.table import Table

        table = Table(title="dataset versions", title_justify="left")
        for column in ("version", "rows", "columns", "encrypted", "content hash", "created", "id"):
            table.add_column(column, overflow="fold")
        for v in page.items:
            table.add_row(
                v.ref,
                f"{v.row_count:,}",
                str(len(v.schema["columns"])),
                ", ".join((v.encryption or {}).get("columns", [])) or "-",
                v.content_hash[:19],
                when(v.created_at),
                v.id,
            )
        print_table(table, page.next_cursor)


@data_app.command("profile")
@errors
def profile_cmd(
    ref: Annotated[str, typer.Argument(help="name, name@N or a version id.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the profile stored with a dataset version."""
    with open_project(project) as proj:
        version = proj.data.versions.resolve(ref)
        facts = version.profile or {}
        if as_json:
            echo_json(facts)
            return
        from rich.table import Table

        table = Table(
            title=f"profile of {version.ref} ({version.row_count:,} rows)", title_justify="left"
        )
        keys = ("type", "nulls", "distinct", "min", "max", "mean", "std")
        table.add_column("column")
        for key in keys:
            table.add_column(key, justify="right")
        for name, col in (facts.get("columns") or {}).items():
            table.add_row(name, *(_fmt(col.get(k)) for k in keys))
        console().print(table)


@data_app.command("drift")
@errors
def drift_cmd(
    reference: Annotated[str, typer.Argument(help="Reference version (name@N).")],
    current: Annotated[str, typer.Argument(help="Current version (name@M).")],
    compare: Annotated[
        str,
        typer.Option(
            help="batch: the rows the current version's own batch added (the default: "
            "newest rows are not diluted by older ones); version: whole versions."
        ),
    ] = "batch",
    important: Annotated[
        list[str] | None,
        typer.Option(
            help="A column whose drift alone fails the report; repeatable. Default: the "
            "model's most important features with --model, else the spec's "
            "datasets.<name>.drift.important."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Compare for this registered model (name, name@N or name@alias): its most "
            "important features are the important columns."
        ),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare a version with a reference column by column; exit 3 when the report fails
    (dataset drift, or an important column drifted)."""
    chosen = _choice(compare, COMPARE, "--compare")
    with open_project(project) as proj:
        who = authorized(proj, "data.check")
        importance = _model_importance(proj, model) if model and important is None else None
        comparison = proj.data.drift(
            reference,
            current,
            compare=chosen,
            actor=who,
            important=important,
            feature_importance=importance,
        )
        report = comparison.report
        if as_json:
            echo_json(
                {
                    **report.to_dict(),
                    "compared": comparison.compared,
                    "important": comparison.important,
                    "drift": comparison.result.to_dict(),
                }
            )
        else:
            console().print(_drift_table(report))
            console().print(comparison.describe(), highlight=False)
        if not report.passed:
            check_failed()


def _model_importance(proj: Any, ref: str) -> dict[str, float]:
    """The registered model's feature importances (its tag, else its fitted model's)."""
    from conveyor.data.drift.importance import IMPORTANCE_TAG, registered_importances

    version = proj.registry.resolve(ref)
    found = registered_importances(version, load=lambda: proj.registry.load(version))
    if not found:
        raise InvalidInputError(
            f"model {version.ref} records no feature importance: register it with the tag "
            f"{IMPORTANCE_TAG!r} ({{feature: weight}}), or pass --important",
            field="model",
        )
    return found


#: How the drift table names each column judgment (the check's status stays pass/warn/fail).
_JUDGMENT_TEXT = {
    "drift": "[bold]drift[/]",
    "significant_below_floor": "significant, below floor",
    "no_drift": "no drift",
    "not_compared": "[dim]not compared[/]",
}


def _drift_table(report: Any) -> Any:
    """The report's table with the judgment of each column: drift, significant but below
    its floor (or near it), no drift, not compared; the important ones marked."""
    from rich.table import Table
    from rich.text import Text

    from conveyor.checks.render import report_table

    base = report_table(report)
    table = Table(title=base.title, title_justify="left")
    for header in ("status", "check", "judgment"):
        table.add_column(header)
    table.add_column("observed", justify="right")
    table.add_column("threshold", justify="right")
    table.add_column("detail", overflow="fold")
    styles = {"pass": "green", "fail": "bold red", "warn": "yellow"}
    for check in report.checks:
        observed = check.observed
        judgment = "-"
        if isinstance(observed, dict) and "judgment" in observed:
            judgment = _JUDGMENT_TEXT.get(observed["judgment"], str(observed["judgment"]))
            if observed.get("near_floor"):
                judgment = "significant, near floor"
            if observed.get("important"):
                judgment += " (important)"
            observed = observed.get("effect_size")
        table.add_row(
            f"[{styles[check.status]}]{check.status.upper()}[/]",
            check.name,
            judgment,
            _fmt(observed),
            _fmt(check.threshold),
            Text(check.detail or ""),
        )
    return table


@data_app.command("forget")
@errors
def forget_cmd(
    key: Annotated[str, typer.Option(help="The data subject, as column=value.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a data subject from every version, quarantine batch and event."""
    from conveyor.data.forget import parse_key

    column, value = parse_key(key)
    if not yes:
        typer.confirm(
            f"Remove every row and event with {column} = {value!r}? This cannot be undone",
            abort=True,
        )
    with open_project(project) as proj:
        who = authorized(proj, "data.forget")
        result = proj.data.forget(column, value, actor=who)
        if as_json:
            echo_json(result.to_dict())
        else:
            console().print(
                f"forgot {column}=<value>: {result.rows_removed} rows in "
                f"{result.versions_rewritten} versions, {result.quarantine_rows_removed} "
                f"quarantined rows, {result.events_erased} events; "
                f"{result.artifacts_deleted} artifacts deleted"
            )


@data_app.command("keygen")
def keygen() -> None:
    """Print a new random encryption key (base64) for $CONVEYOR_DATA_KEY."""
    from conveyor.data.crypto import generate_key

    typer.echo(generate_key())


@data_app.command("rotate-key")
@errors
def rotate_key(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Re-encrypt every sensitive column under the keyring's current key."""
    from dataclasses import asdict

    from conveyor.data.events import DATA_KEY_ROTATED
    from conveyor.data.keys import rotate

    with open_project(project) as proj:
        who = authorized(proj, "data.rotate_key")
        result = rotate(proj.data.versions)
        proj.events.record(
            DATA_KEY_ROTATED, subject=result.key_id, actor=who, payload=asdict(result)
        )
        if as_json:
            echo_json(asdict(result))
        else:
            console().print(
                f"now sealed with key {result.key_id}: {result.parts} parts in "
                f"{result.versions} versions, {result.quarantine_batches} quarantine "
                "batches re-encrypted"
            )


@quarantine_app.command("list")
@errors
def quarantine_list(
    dataset: Annotated[str | None, typer.Option(help="Only this data set.")] = None,
    status: Annotated[str | None, typer.Option(help="pending | replayed | discarded")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    cursor: CursorOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List quarantine batches with their reasons."""
    chosen = _choice(status, QUARANTINE_STATUSES, "--status")
    with open_project(project) as proj:
        page = proj.data.quarantine.list(dataset=dataset, status=chosen, limit=limit, cursor=cursor)
        if as_json:
            echo_list((_batch_dict(b) for b in page.items), page.next_cursor)
            return
        from rich.table import Table

        table = Table(title="quarantine", title_justify="left")
        for column in ("id", "dataset", "rows", "status", "reasons", "created"):
            table.add_column(column, overflow="fold")
        for b in page.items:
            reasons = ", ".join(f"{k} ({v})" for k, v in sorted(b.reasons.items()))
            table.add_row(
                b.id, b.dataset, f"{b.row_count:,}", b.status, reasons, when(b.created_at)
            )
        print_table(table, page.next_cursor)


@quarantine_app.command("show")
@errors
def quarantine_show(
    batch_id: Annotated[str, typer.Argument(help="The batch id (see `quarantine list`).")],
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 20,
    reveal: Annotated[bool, typer.Option(help="Decrypt sensitive columns (audited).")] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a batch's rows with the reason each was set aside (sensitive columns masked)."""
    with open_project(project) as proj:
        if reveal:
            authorized(proj, "data.reveal")  # decrypting is audited: a project with keys needs one
        rows = proj.data.quarantined_rows(batch_id, reveal=reveal).slice(0, limit)
        if as_json:
            echo_list(rows.to_pylist())
            return
        from rich.table import Table

        table = Table(title=f"quarantine batch {batch_id}", title_justify="left")
        for name in rows.column_names:
            table.add_column(name, overflow="fold")
        for record in rows.to_pylist():
            table.add_row(*(_fmt(record[n]) for n in rows.column_names))
        console().print(table)


@quarantine_app.command("replay")
@errors
def quarantine_replay(
    batch_id: Annotated[str, typer.Argument(help="The batch id.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate a batch again; rows that now pass become a new version."""
    with open_project(project) as proj:
        who = authorized(proj, "data.ingest")
        result = proj.data.replay(batch_id, actor=who)
        if as_json:
            echo_json(result.to_dict())
            return
        version = result.version.ref if result.version else "no version"
        console().print(
            f"replayed {batch_id}: {result.rows_accepted} rows -> {version}, "
            f"{result.rows_quarantined} still quarantined"
        )


@quarantine_app.command("discard")
@errors
def quarantine_discard(
    batch_id: Annotated[str, typer.Argument(help="The batch id.")],
    reason: Annotated[str, typer.Option(help="Why the rows are given up (recorded).")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give up a batch on purpose, with a reason (recorded as an event)."""
    from conveyor.data.events import DATA_QUARANTINE_DISCARDED

    with open_project(project) as proj:
        who = authorized(proj, "data.quarantine")
        batch = proj.data.quarantine.discard(batch_id, reason)
        proj.events.record(
            DATA_QUARANTINE_DISCARDED, subject=batch_id, actor=who, payload={"reason": reason}
        )
        if as_json:
            echo_json(_batch_dict(batch))
        else:
            console().print(f"discarded {batch_id}")


def _choice(value: str | None, allowed: tuple[str, ...], option: str) -> Any:
    if value is not None and value not in allowed:
        raise InvalidInputError(
            f"{option} {value!r}: expected one of {', '.join(allowed)}",
            field=option.lstrip("-"),
            allowed=allowed,
        )
    return value


def _batch_dict(batch: Any) -> dict[str, Any]:
    return {
        "id": batch.id,
        "dataset": batch.dataset,
        "rows": batch.row_count,
        "status": batch.status,
        "reasons": batch.reasons,
        "created_at": batch.created_at.isoformat(),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
