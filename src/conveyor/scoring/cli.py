"""``conveyor score batch``.

::

    conveyor score batch fraud@champion --input data/customers/ --output scores/
    conveyor score batch fraud@3 --input "sql:postgresql://db/shop" \\
        --query "SELECT * FROM customers ORDER BY id" \\
        --output "sql:postgresql://db/shop" --table scores --key id
    conveyor score batch fraud@3 --input dataset:customers@4 --output s3://lake/scores/ \\
        --engine ray --workers 8
    conveyor score batch fraud@3 --input data/ --output scores/ --resume RUN_ID
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from conveyor.cli.common import JsonOpt, ProjectOpt, authorized, echo_json, errors, open_project

if TYPE_CHECKING:
    from conveyor.scoring.batch import Progress

__all__ = ["score_app"]

score_app = typer.Typer(help="Score data with a model version: batch (files, SQL, data sets).")


@score_app.command("batch")
@errors
def batch_cmd(
    model: Annotated[str, typer.Argument(help="MODEL, MODEL@ALIAS or MODEL@N.")],
    input: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="A Parquet/CSV file or folder (local or fsspec URL: s3://...), sql:URL "
            "(with --query) or dataset:NAME@N.",
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="A folder of Parquet partitions with a manifest (local or fsspec URL; {date} "
            "is today, UTC), or sql:URL with --table and --key (upsert).",
        ),
    ],
    query: Annotated[str | None, typer.Option(help="The query of a sql: input.")] = None,
    table: Annotated[str | None, typer.Option(help="The table of a sql: output.")] = None,
    key: Annotated[
        str | None, typer.Option(help="The key column a sql: output is upserted on.")
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="local (worker processes) or ray (Ray Data).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes or Ray actors (default: scoring.workers, or cores)."),
    ] = None,
    chunk_rows: Annotated[
        int | None, typer.Option(help="Rows scored at a time (default: scoring.chunk_rows).")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(help="A failed or interrupted run's id: score only its missing partitions."),
    ] = None,
    rejected: Annotated[
        str | None,
        typer.Option(help="Where a sql: output's rejected rows go (default: under .conveyor/)."),
    ] = None,
    file_format: Annotated[
        str | None, typer.Option("--format", help="parquet or csv (default: by extension).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray address: ray://host:10001 or auto.")
    ] = None,
    entity_time: Annotated[
        str,
        typer.Option(
            help="A version trained on a feature service: the column of each row's time, "
            "its features are joined as of."
        ),
    ] = "event_timestamp",
    force: Annotated[
        bool, typer.Option(help="Score with a version that failed its gates (needs --reason).")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why (recorded with --force).")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score INPUT with MODEL into OUTPUT, partition by partition. Rows that do not fit the
    version's signature go to a rejected-rows output with their reason. A run that stops
    midway is continued with --resume RUN_ID: only the missing partitions are scored."""
    from conveyor.scoring.batch import score_batch

    with open_project(project) as proj:
        who = authorized(proj, "scoring.batch")
        bar = _Bar() if sys.stderr.isatty() and not as_json else None
        try:
            result = score_batch(
                proj,
                model,
                input=input,
                output=output,
                query=query,
                table=table,
                key=key,
                engine=engine,
                workers=workers,
                chunk_rows=chunk_rows,
                resume=resume,
                force=force,
                reason=reason,
                rejected_output=rejected,
                file_format=file_format,
                ray_address=ray_address,
                entity_time=entity_time,
                actor=who,
                progress=bar.update if bar is not None else None,
            )
        finally:
            if bar is not None:
                bar.stop()
    if as_json:
        echo_json(result.to_dict())
        return
    typer.echo(
        f"run {result.run_id}: {result.model}@{result.version} scored {result.scored:,} of "
        f"{result.rows:,} rows in {result.partitions} partitions ({result.scored_now} now) in "
        f"{result.seconds:.2f} s ({result.rows_per_s:,.0f} rows/s) -> {result.output}"
    )
    if result.rejected:
        typer.echo(
            f"{result.rejected:,} rows rejected, with their reasons: {result.rejected_output}"
        )
    if result.manifest:
        typer.echo(f"manifest: {result.manifest}")


class _Bar:
    """Partitions done, rows and rejected rows, on stderr (a terminal only)."""

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
            TextColumn("scoring"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("partitions, {task.fields[note]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self.task: Any = None
        self.progress.start()

    def update(self, p: Progress) -> None:
        note = f"{p.rows:,} rows, {p.rejected:,} rejected"
        if self.task is None:
            self.task = self.progress.add_task("scoring", total=p.partitions, note=note)
        self.progress.update(self.task, completed=p.partitions_done, total=p.partitions, note=note)

    def stop(self) -> None:
        self.progress.stop()
