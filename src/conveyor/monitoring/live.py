"""``conveyor monitor [MODEL]``: the system monitors as a table refreshing in place.

::

    conveyor monitor                        # every model, the last hour, every 2 s
    conveyor monitor fraud --window 15m --refresh 5s
    conveyor monitor fraud --once           # print once and exit (as when piped)
    conveyor monitor --once --json          # the SystemReport document
    conveyor monitor data [DATASET] --since 7d --window 1d    # data-quality trends

One row per model, version and arm over the last ``--window``: requests per second,
latency p50/p95/p99, 4xx and 5xx rates, cache hits, shed requests, queue depth, and the
server's CPU and memory (every worker summed). Below, one line per worker process from its
latest sample. ``conveyor monitor MODEL`` is ``conveyor monitor live MODEL``: the group's
default command (a model named like a subcommand, ``latency``, needs ``live``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from conveyor.cli.common import (
    JsonOpt,
    ProjectOpt,
    authorized,
    console,
    echo_json,
    errors,
    open_project,
    parse_duration,
)

__all__ = ["DefaultLive", "data_command", "live_command", "render"]

_HELP = ("--help", "-h")


class DefaultLive(TyperGroup):
    """A command group whose default command is ``live``: ``monitor fraud`` is ``monitor
    live fraud``, and ``monitor`` alone (or with options only) is ``monitor live``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in _HELP):
            args = ["live", *args]
        return super().parse_args(ctx, args)


@errors
def live_command(
    model: Annotated[str | None, typer.Argument(help="Only this model (default: all).")] = None,
    window: Annotated[str, typer.Option(help="The sliding window shown: 15m, 1h...")] = "1h",
    refresh: Annotated[str, typer.Option(help="Time between refreshes: 2s, 10s...")] = "2s",
    once: Annotated[bool, typer.Option("--once", help="Print the table once and exit.")] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """System monitors per model, version and arm over the last --window, refreshed in
    place: requests/s, latency p50/p95/p99, 4xx/5xx rates, cache hits, shed load, queue
    depth, CPU and memory. Ctrl-C stops it."""
    from conveyor.monitoring.data_quality import _covering
    from conveyor.monitoring.query import MonitorQuery

    length = parse_duration(window, "--window")
    every = parse_duration(refresh, "--refresh").total_seconds()
    if length < timedelta(seconds=1):
        from conveyor.errors import InvalidInputError

        raise InvalidInputError("--window must be a second or longer", field="window")
    with open_project(project) as proj:
        authorized(proj, "monitoring.read")
        monitor = MonitorQuery(proj)

        def report() -> dict[str, Any]:
            until = datetime.now(UTC)
            since = until - length
            found = monitor.system(model, since=since, until=until, window=_covering(since, until))
            return found.to_dict()

        out = console()
        if once or as_json or not out.is_terminal:  # piped: one table, no cursor moves
            body = report()
            if as_json:
                echo_json(body)
            else:
                out.print(render(body, window))
            return
        from rich.live import Live

        with Live(render(report(), window), console=out, auto_refresh=False) as live:
            try:
                while True:
                    time.sleep(max(0.2, every))
                    live.update(render(report(), window), refresh=True)
            except KeyboardInterrupt:
                return


def render(report: dict[str, Any], window: str) -> Any:
    """The report as a rich renderable: the model table and one line per worker."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=f"conveyor monitor: the last {window}, to {report['until'][11:19]} UTC",
        title_justify="left",
        caption=f"{report['read']['files']} files + {report['read']['tail_events']:,} events "
        f"not yet compacted; {report['seconds']:.3f} s",
    )
    columns = (
        "model",
        "version",
        "arm",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "4xx",
        "5xx",
        "cache hit",
        "shed",
        "queue",
        "CPU %",
        "RSS MiB",
    )
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < 3 else "right")
    for w in sorted(
        report["windows"], key=lambda w: (w["model"], w["version"] or "", w["arm"] or "")
    ):
        table.add_row(
            escape(str(w["model"])),
            escape(str(w["version"] or "-")),
            escape(str(w["arm"] or "-")),
            _num(w["requests_per_s"], 2),
            _num(w["p50_ms"], 2),
            _num(w["p95_ms"], 2),
            _num(w["p99_ms"], 2),
            _share(w["errors_4xx"], w["requests"]),
            _share(w["errors_5xx"], w["requests"]),
            _share(w["cached"], w["answered"]) if w["answered"] else "-",
            str(w["shed"]),
            "-" if w["queue_depth"] is None else str(w["queue_depth"]),
            _num(w["cpu_percent"], 1),
            _num(w["rss_mib"], 0),
        )
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for p in report["processes"]:
        latest[(p["host"], p["pid"])] = p
    lines = [
        Text(
            f"worker {host}:{pid}  cpu {p['cpu_percent']:.1f}%  rss {p['rss_mib']:.0f} MiB  "
            f"queue {p['queue_depth']}  batches {p['batches']}  shed {p['shed']}",
            style="dim",
        )
        for (host, pid), p in sorted(latest.items())
    ]
    if not report["windows"]:
        lines.insert(0, Text("no request in the window", style="dim"))
    return Group(table, *lines)


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _share(part: int, whole: int) -> str:
    return "-" if not whole else f"{100 * part / whole:.2f}%"


@errors
def data_command(
    dataset: Annotated[
        str | None, typer.Argument(help="Only this data set (default: all).")
    ] = None,
    since: Annotated[str, typer.Option(help="Start: an age (24h, 7d) or an ISO time.")] = "24h",
    until: Annotated[
        str | None, typer.Option(help="End (exclusive): an age or an ISO time; default now.")
    ] = None,
    window: Annotated[str, typer.Option(help="Window length: 1h, 1d...")] = "1h",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Data-quality monitors of the ingest runs per data set and window: null, out-of-range
    and quarantine rates, schema changes, and the newest row's age (freshness)."""
    from rich.markup import escape
    from rich.table import Table

    from conveyor.cli.common import parse_since
    from conveyor.monitoring.query import MonitorQuery

    start = parse_since(since, option="--since")
    end = parse_since(until, option="--until")
    length = parse_duration(window, "--window")
    with open_project(project) as proj:
        authorized(proj, "monitoring.read")
        report = MonitorQuery(proj).data_quality(
            dataset,
            since=start,  # type: ignore[arg-type]  # parse_since of a str is a datetime
            until=end,
            window=length,
        )
    if as_json:
        echo_json(report.to_dict())
        return
    table = Table(
        title=f"data quality, {report.since.isoformat()[:19]} to {report.until.isoformat()[:19]}"
        f" UTC, {window} windows",
        title_justify="left",
    )
    columns = ("window", "dataset", "runs", "rows", "nulls", "worst column", "out of range",
               "quarantined", "schema changes", "freshness")  # fmt: skip
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i in (0, 1, 5) else "right")
    for w in report.windows:
        worst = w["worst_null_column"]
        table.add_row(
            w["window"][:16].replace("T", " "),
            escape(w["dataset"]),
            str(w["runs"]),
            f"{w['rows']:,}",
            _rate(w["null_rate"]),
            "-" if worst is None else f"{escape(worst)} {_rate(w['worst_null_rate'])}",
            _rate(w["out_of_range_rate"]),
            _rate(w["quarantine_rate"]),
            str(len(w["schema_changes"])),
            "-" if w["freshness_s"] is None else _age(w["freshness_s"]),
        )
    out = console()
    out.print(table)
    for note in report.notes:
        out.print(f"[dim]note: {escape(note)}[/]", soft_wrap=True)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
