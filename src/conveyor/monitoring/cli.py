"""``conveyor events compact`` and ``conveyor monitor ...``.

::

    conveyor events compact                      # the log's new events into Parquet
    conveyor monitor latency                     # every model, the last hour, 1-minute windows
    conveyor monitor latency fraud --since 24h --window 5m --json
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from conveyor.cli.common import (
    DURATION_FORMS,
    JsonOpt,
    ProjectOpt,
    authorized,
    check_failed,
    console,
    echo_json,
    errors,
    open_project,
    parse_duration,
    parse_since,
)
from conveyor.monitoring.live import DefaultLive, data_command, live_command

if TYPE_CHECKING:
    from conveyor.monitoring.compaction import Progress

__all__ = ["compact_command", "monitor_app"]

monitor_app = typer.Typer(
    help="Monitors computed from the event log (its columnar copy and newest events). "
    "`conveyor monitor [MODEL]` is `conveyor monitor live [MODEL]`.",
    cls=DefaultLive,  # `monitor fraud` runs `monitor live fraud`
)


@errors
def compact_command(
    batch_events: Annotated[
        int | None,
        typer.Option(help="Events per batch (default: monitoring.compaction.batch_events)."),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy the events committed since the last compaction into hourly Parquet files under
    the artifact store (what monitor queries read). Safe to interrupt and to re-run."""
    with open_project(project) as proj:
        who = authorized(proj, "monitoring.compact")
        from conveyor.monitoring.compaction import compact

        out = console()

        def tell(p: Progress) -> None:
            if as_json:
                return
            if p.phase == "start":
                out.print(f"compacting events {p.last_seq + 1:,} to {p.horizon:,}", soft_wrap=True)
            elif p.phase == "batch":
                out.print(
                    f"  batch {p.batches}: through seq {p.last_seq:,}; {p.events:,} events, "
                    f"{p.files} files so far",
                    soft_wrap=True,
                )

        done = compact(proj, batch_events=batch_events, progress=tell, actor=who)
    if as_json:
        echo_json(done.to_dict())
        return
    rate = f" ({done.events / done.seconds:,.0f} events/s)" if done.events and done.seconds else ""
    typer.echo(
        f"compacted {done.events:,} events into {done.files} files in {done.seconds:.2f} s{rate}; "
        f"checkpoint seq {done.last_seq:,}; the copy holds {done.total_events:,} events in "
        f"{done.total_files} files"
        + (f"; removed {done.removed} files an interrupted run left" if done.removed else "")
    )


@monitor_app.command("latency")
@errors
def latency_command(
    model: Annotated[str | None, typer.Argument(help="Only this model (default: all).")] = None,
    since: Annotated[
        str, typer.Option(help=f"Start: an age ({DURATION_FORMS}) or an ISO time.")
    ] = "1h",
    until: Annotated[
        str | None, typer.Option(help="End (exclusive): an age or an ISO time; default now.")
    ] = None,
    window: Annotated[str, typer.Option(help="Window length: 1m, 5m, 1h...")] = "1m",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Requests and latency p50/p95/p99 per model, version, arm and window, from the
    prediction events (the columnar copy plus the events not yet compacted)."""
    from conveyor.monitoring.query import MonitorQuery

    start = parse_since(since, option="--since")
    end = parse_since(until, option="--until")
    length = parse_duration(window, "--window")
    with open_project(project) as proj:
        report = MonitorQuery(proj).latency(
            model,
            since=start,  # type: ignore[arg-type]  # parse_since of a str is a datetime
            until=end,
            window=length,
        )
    if as_json:
        echo_json(report.to_dict())
        return
    _print_latency(report.to_dict())


def _print_latency(report: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    read = report["read"]
    table = Table(
        title=f"latency, {report['since'][:19]} to {report['until'][:19]} UTC, "
        f"{report['window_s']:g} s windows",
        title_justify="left",
        caption=f"{read['files']} files + {read['tail_events']:,} events not yet compacted; "
        f"{report['seconds']:.3f} s",
    )
    for column in ("window", "model", "version", "arm", "requests", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(
            column, justify="right" if "ms" in column or column == "requests" else "left"
        )
    for w in report["windows"]:
        table.add_row(
            w["window"][11:19],
            escape(str(w["model"])),
            escape(str(w["version"])),
            escape(str(w["arm"])),
            f"{w['requests']:,}",
            *(f"{w[k]:.2f}" if w[k] is not None else "-" for k in ("p50_ms", "p95_ms", "p99_ms")),
        )
    out = console()
    out.print(table)
    for note in report["notes"]:
        out.print(f"[dim]note: {escape(note)}[/]", soft_wrap=True)


# `conveyor monitor drift MODEL` (its own module: live drift and CBPE).
from conveyor.monitoring.drift_cli import drift_command  # noqa: E402

monitor_app.command("drift")(drift_command)

# `conveyor monitor [MODEL]`: the live table, the group's default (monitoring/live.py).
monitor_app.command("live")(live_command)
monitor_app.command("data")(data_command)

# `conveyor monitor quality MODEL` (its own module: ground truth and model quality).
from conveyor.monitoring.feedback_cli import quality_command  # noqa: E402

monitor_app.command("quality")(quality_command)

# `conveyor monitor grafana`, `prometheus-rules`, `alertmanager` (interop: from the spec).
from conveyor.monitoring.interop.cli import (  # noqa: E402
    alertmanager_command,
    grafana_command,
    prometheus_config_command,
    prometheus_rules_command,
)

monitor_app.command("grafana")(grafana_command)
monitor_app.command("prometheus-rules")(prometheus_rules_command)
monitor_app.command("alertmanager")(alertmanager_command)
monitor_app.command("prometheus-config")(prometheus_config_command)


@monitor_app.command("shadow")
@errors
def shadow_command(
    model: Annotated[str, typer.Argument(help="The model whose shadow versions to analyse.")],
    version: Annotated[
        int | None, typer.Option(help="Only this shadow version (default: every one).")
    ] = None,
    window: Annotated[str, typer.Option(help=f"How far back from now ({DURATION_FORMS}).")] = "1h",
    top: Annotated[int, typer.Option(help="Largest disagreements listed per version.")] = 10,
    min_agreement: Annotated[
        float, typer.Option(help="Agreement rate a shadow version needs to pass.")
    ] = 0.95,
    max_error_rate: Annotated[
        float, typer.Option(help="Share of failed shadow copies allowed.")
    ] = 0.01,
    max_latency_ratio: Annotated[
        float, typer.Option(help="Shadow p95 latency allowed, as a multiple of the primary's.")
    ] = 1.5,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Shadow versions against the answers given: agreement, differences, latency of
    shadow and primary, errors and the largest disagreements with their inputs
    (monitoring.shadow_analysis). Exit code 3 when the report failed."""
    from datetime import UTC, datetime

    from conveyor.monitoring.shadow_analysis import shadow_analysis

    length = parse_duration(window, "--window")
    with open_project(project) as proj:
        authorized(proj, "monitoring.read")
        now = datetime.now(UTC)
        analysis = shadow_analysis(
            proj,
            model,
            version,
            since=now - length,
            until=now,
            top=top,
            min_agreement=min_agreement,
            max_error_rate=max_error_rate,
            max_latency_ratio=max_latency_ratio,
        )
    if as_json:
        echo_json(analysis.to_dict())
    else:
        _print_shadow(analysis.to_dict())
    if not analysis.report.passed:
        check_failed()


def _print_shadow(analysis: dict[str, Any]) -> None:
    from rich.markup import escape

    out = console()
    out.print(
        f"shadow analysis of {escape(analysis['model'])}, {analysis['since'][:19]} to "
        f"{analysis['until'][:19]} UTC",
        soft_wrap=True,
    )

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for v in analysis["versions"]:
        rate = v["agreement_rate"]
        lat = v["latency"]
        out.print(
            f"  @{v['version']} (against @{','.join(map(str, v['primary_versions'])) or '?'}): "
            f"{v['copies']:,} copies, {v['rows']:,} rows, {v['task'] or '-'}; agreement "
            + ("-" if rate is None else f"{rate:.2%}")
            + f"; errors {v['errors']:,}; p50/p95/p99 ms shadow "
            f"{ms(lat['shadow']['p50_ms'])}/{ms(lat['shadow']['p95_ms'])}/"
            f"{ms(lat['shadow']['p99_ms'])}, primary {ms(lat['primary']['p50_ms'])}/"
            f"{ms(lat['primary']['p95_ms'])}/{ms(lat['primary']['p99_ms'])}",
            soft_wrap=True,
        )
        d = v["differences"]
        if d and d["quantiles"]:
            q = d["quantiles"]
            out.print(
                f"    shadow - primary: mean {d['mean']:.4g}, mean |d| {d['mean_abs']:.4g}, "
                f"p5 {q['p5']:.4g}, p50 {q['p50']:.4g}, p95 {q['p95']:.4g}",
                soft_wrap=True,
            )
        for item in v["disagreements"]:
            out.print(
                f"    {escape(str(item['request_id']))} row {item['row']}: primary "
                f"{escape(str(item['primary']))[:60]}, shadow {escape(str(item['shadow']))[:60]}"
                f"; input {escape(str(item['input']))[:120]}",
                soft_wrap=True,
            )
    for check in analysis["report"]["checks"]:
        status = "ok" if check["passed"] else ("WARN" if check["severity"] == "warning" else "FAIL")
        out.print(
            f"  [{status}] {escape(check['name'])}: {escape(check['detail'])}", soft_wrap=True
        )
    out.print(f"verdict: {analysis['report']['verdict']}")
    for note in analysis["notes"]:
        out.print(f"[dim]note: {escape(note)}[/]", soft_wrap=True)
