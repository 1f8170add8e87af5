"""``conveyor score batch``.

::

    conveyor score batch fraud@champion --input data/customers/ --output scores/
    conveyor score batch fraud@3 --input "sql:postgresql://db/shop" \\
        --query "SELECT * FROM customers ORDER BY id" \\
        --output "sql:postgresql://db/shop" --table scores --key id
    conveyor score batch fraud@3 --input dataset:customers@4 --output s3://lake/scores/ \\
        --engine ray --workers 8
    conveyor score batch fraud@3 --input data/ --output scores/ --resume RUN_ID
    conveyor score stream fraud --source "nats://127.0.0.1:4222/orders?subject=orders.>" \\
        --output scores.fraud --key-field user_id
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from conveyor.cli.common import JsonOpt, ProjectOpt, authorized, echo_json, errors, open_project

if TYPE_CHECKING:
    from conveyor.scoring.batch import Progress

__all__ = ["score_app"]

score_app = typer.Typer(
    help="Score data with a model version: batch (files, SQL, data sets) or a stream."
)


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


@score_app.command("stream")
@errors
def stream_cmd(
    model: Annotated[
        str, typer.Argument(help="MODEL (its route: canary, shadows), MODEL@ALIAS or MODEL@N.")
    ],
    source: Annotated[
        str,
        typer.Option(
            "--source",
            "-s",
            help="nats://HOST:4222/STREAM?subject=...&durable=... (JetStream) or "
            "redis://HOST:6379/0?stream=KEY&group=... (Redis Streams).",
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Subject (Redis: stream key) the scores are published to."
        ),
    ] = None,
    dead_letter: Annotated[
        str | None, typer.Option(help="Where poison messages go, with their reason.")
    ] = None,
    table_url: Annotated[
        str | None, typer.Option(help="Also upsert the scores into this database (sql:URL).")
    ] = None,
    table: Annotated[str | None, typer.Option(help="The table of --table-url.")] = None,
    webhook: Annotated[
        str | None, typer.Option(help="Also POST the scores to this URL (batches).")
    ] = None,
    features: Annotated[
        str | None, typer.Option(help="Also write the scores as online features of this view.")
    ] = None,
    key_field: Annotated[
        str | None, typer.Option(help="The field naming the entity (sticky routes, windows).")
    ] = None,
    time_field: Annotated[
        str | None, typer.Option(help="The field holding the event time (windows).")
    ] = None,
    window: Annotated[
        list[str] | None,
        typer.Option(
            help="A window: tumbling:60s, sliding:60s/10s or session:30s, optionally "
            "':FIELD' (default prediction) and '+LATENESS' (allowed lateness), e.g. "
            "tumbling:60s:prediction+10s. Repeat for several.",
        ),
    ] = None,
    late: Annotated[
        str | None, typer.Option(help="Where events too late for their window go.")
    ] = None,
    batch: Annotated[
        int | None, typer.Option(help="Messages in flight (default: scoring.stream.batch).")
    ] = None,
    max_messages: Annotated[int | None, typer.Option(help="Stop after this many messages.")] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without a message.")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Score with a version that failed its gates (needs --reason).")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why (recorded with --force).")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a stream's messages with MODEL as they come: at least once, each result written
    once per message id, poison messages to the dead-letter target with their reason.
    Run more of these with the same --source to share the work. Ctrl-C (SIGTERM) stops
    after the batch in flight."""
    import signal
    import threading

    from conveyor.errors import InvalidInputError
    from conveyor.scoring.stream.scorer import StreamScorer
    from conveyor.scoring.stream.sinks import FeatureSink, StreamSink, SubjectSink, TableSink
    from conveyor.scoring.stream.windows import parse_window

    if force and not (reason and reason.strip()):
        raise InvalidInputError("--force needs a --reason", field="reason")
    if bool(table_url) != bool(table):
        raise InvalidInputError("--table-url and --table go together", field="table")
    windows = [parse_window(w) for w in window or ()]
    with open_project(project) as proj:
        who = authorized(proj, "scoring.stream")
        sinks: list[StreamSink] = [SubjectSink(output)]
        if table_url and table:
            sinks.append(TableSink(table_url, table))
        if webhook:
            from conveyor.scoring.stream.sinks import WebhookSink

            sinks.append(WebhookSink(webhook))
        if features:
            sinks.append(FeatureSink(features))
        scorer = StreamScorer(
            proj,
            model,
            source,
            sinks=sinks,
            dead_letter=dead_letter,
            late=late,
            windows=windows,
            batch=batch,
            key_field=key_field,
            time_field=time_field,
            force=force,
            actor=who,
        )
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            result = scorer.run(max_messages=max_messages, idle_timeout=idle_timeout, stop=stop)
        except KeyboardInterrupt:
            result = None
        finally:
            signal.signal(signal.SIGTERM, previous)
        if result is None:
            from conveyor.scoring.stream.scorer import StreamResult

            result = StreamResult(
                scorer.consumer_id,
                scorer.model,
                scorer.source.description,
                scorer.source.group,
                scorer.stats,
                0.0,
                "interrupted",
            )
    if as_json:
        echo_json(result.to_dict())
        return
    s = result.stats
    typer.echo(
        f"consumer {result.consumer_id} of {result.group}: {s.messages:,} messages, "
        f"{s.scored:,} scored, {s.dead_lettered:,} dead-lettered, {s.retried:,} delivered "
        f"again, {s.windows:,} windows, {s.late:,} late in {result.seconds:.1f} s"
    )
