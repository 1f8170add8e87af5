"""``conveyor events sink``: the broker's events into PostgreSQL and Parquet.

::

    conveyor events sink --source nats://127.0.0.1:4222/CONVEYOR_EVENTS   # until SIGTERM
    conveyor events sink --status                                          # position and lag
    conveyor events sink --idle-exit 5 --json      # drain what is there, then stop (a job)
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Annotated, Any

import typer

from conveyor.cli.common import (
    JsonOpt,
    ProjectOpt,
    authorized,
    console,
    echo_json,
    errors,
    open_project,
)

__all__ = ["sink_command"]


@errors
def sink_command(
    source: Annotated[
        str | None,
        typer.Option(
            help="The broker's event log (nats://HOST:4222/STREAM); default: "
            "monitoring.sink.source."
        ),
    ] = None,
    status: Annotated[
        bool, typer.Option("--status", help="Print where the sink stands and exit.")
    ] = False,
    durable: Annotated[
        str | None, typer.Option(help="The consumer's name (default: monitoring.sink.durable).")
    ] = None,
    batch_events: Annotated[
        int | None, typer.Option(help="Events per batch (default: monitoring.sink.batch_events).")
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option(help="Seconds an event waits for Parquet and its ack, at most."),
    ] = None,
    ack_wait: Annotated[
        float | None, typer.Option(help="Seconds before an unacked event comes again.")
    ] = None,
    idle_exit: Annotated[
        float | None,
        typer.Option(help="Stop once nothing came for this many seconds (default: run on)."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (0: any port)."),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move the events servers write to NATS JetStream into this project's SQL event log
    and its Parquet copy, acking each once it is in both. Runs until SIGTERM or Ctrl-C
    (the batch in hand is finished first). Safe to kill and to restart."""
    overrides: dict[str, Any] = {
        name: value
        for name, value in (
            ("durable", durable),
            ("batch_events", batch_events),
            ("interval_s", interval),
            ("ack_wait_s", ack_wait),
        )
        if value is not None
    }
    with open_project(project) as proj:
        if status:
            _print_status(proj, source, overrides, as_json)
            return
        who = authorized(proj, "monitoring.compact")
        from conveyor.monitoring.sink import Sink, SinkStats

        stop = threading.Event()
        previous = {
            sig: signal.signal(sig, lambda *_: stop.set())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        from rich.console import Console

        out = Console(stderr=True) if as_json else console()
        try:
            with Sink.open(
                proj, source=source, actor=who, metrics_port=metrics_port, **overrides
            ) as sink:
                where = f" (metrics on 127.0.0.1:{sink.metrics.port})" if sink.metrics else ""
                out.print(
                    f"events sink: {sink.source.url} -> {sink.target.url} and its Parquet copy, "
                    f"consumer {sink.reader.name}{where}",
                    soft_wrap=True,
                )

                shown = [0.0]

                def tell(stats: SinkStats) -> None:
                    # A line per batch at first, then one every 10 s: a long-lived process.
                    now = time.monotonic()
                    if not as_json and (stats.batches <= 3 or now - shown[0] >= 10):
                        shown[0] = now
                        out.print(
                            f"  batch {stats.batches}: {stats.inserted:,} events stored, "
                            f"{stats.skipped:,} already there, {stats.rejected} rejected; "
                            f"acked through seq {stats.acked_seq:,}",
                            soft_wrap=True,
                        )

                done = sink.run(stop, idle_exit_s=idle_exit, on_cycle=tell)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if as_json:
        echo_json(done.to_dict())
        return
    typer.echo(
        f"events sink stopped ({done.stopped}): {done.inserted:,} events stored, "
        f"{done.skipped:,} already there, {done.rejected} rejected, in {done.seconds:.1f} s"
    )


def _print_status(proj: Any, source: str | None, overrides: dict[str, Any], as_json: bool) -> None:
    from conveyor.backends import EVENTS
    from conveyor.errors import InvalidInputError
    from conveyor.events.nats import NatsEventLog
    from conveyor.monitoring.compaction import sql_log
    from conveyor.monitoring.settings import monitoring_of
    from conveyor.monitoring.sink import sink_status

    spec = monitoring_of(proj.spec).sink
    url = source or spec.source
    if not url:
        raise InvalidInputError(
            "--status needs the broker's event log: --source or monitoring.sink.source",
            field="source",
        )
    with EVENTS.open(url) as log:
        if not isinstance(log, NatsEventLog):
            raise InvalidInputError(
                f"the sink reads an event log on NATS JetStream (nats://...), not {log.url}",
                field="source",
            )
        reader = log.durable(overrides.get("durable", spec.durable))
        found = sink_status(proj, reader, sql_log(proj))
    if as_json:
        echo_json(found)
        return
    parquet = found["parquet"]
    typer.echo(
        f"consumer {found['consumer']} on {found['stream']}"
        + ("" if found["exists"] else " (not created yet)")
        + f": acked through seq {found['acked_seq']:,} of {found['stream_last_seq']:,}; "
        f"lag {found['lag']:,} ({found['pending']:,} not delivered, {found['ack_pending']:,} "
        f"in flight, {found['redelivered']:,} redelivered)\n"
        f"SQL log settled through seq {found['sql_settled_seq']:,}; Parquet copy through seq "
        f"{parquet['last_seq']:,} ({parquet['events']:,} events in {parquet['files']:,} files); "
        f"{found['rejected']} rejected messages kept"
    )
