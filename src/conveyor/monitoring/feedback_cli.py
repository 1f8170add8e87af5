"""``conveyor feedback ...`` and ``conveyor monitor quality``.

::

    conveyor feedback load labels.csv               # CSV, Parquet, JSON lines (role predictor)
    conveyor feedback quarantine --since 7d         # feedback that joins no prediction
    conveyor monitor quality fraud --since 7d --window 1d
    conveyor monitor quality fraud --drift --json   # with the concept-drift judgment
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor.cli.common import (
    DURATION_FORMS,
    JsonOpt,
    ProjectOpt,
    authorized,
    console,
    echo_json,
    errors,
    open_project,
    parse_duration,
    parse_since,
)

__all__ = ["feedback_app", "quality_command"]

feedback_app = typer.Typer(
    help="Ground truth: labels and business values joined to predictions.",
    no_args_is_help=True,
)


@feedback_app.command("load")
@errors
def load_command(
    file: Annotated[Path, typer.Argument(help="A .csv, .parquet, .jsonl/.ndjson or .json file.")],
    format: Annotated[
        str | None, typer.Option(help="csv, parquet, jsonl or json (default: the extension).")
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a file of feedback records (columns request_id, row, model, key.NAME, time,
    label, value). Bad rows are kept in a feedback.rejected event with their reasons."""
    with open_project(project) as proj:
        who = authorized(proj, "monitoring.feedback")
        from conveyor.monitoring.feedback import load_feedback

        done = load_feedback(proj, file, format=format, actor=who)
    if as_json:
        echo_json(done.to_dict())
        return
    body = done.to_dict()
    line = (
        f"loaded {body['accepted']:,} feedback records from {file.name} "
        f"({body['by_request_id']:,} by request id, {body['by_key']:,} by entity key)"
    )
    if done.rejected:
        reasons = ", ".join(f"{n:,} {r}" for r, n in sorted(done.reasons.items()))
        line += f"; rejected {done.rejected:,} ({reasons}), kept in a feedback.rejected event"
    typer.echo(line)
    if done.rejected:
        raise typer.Exit(code=1)


@feedback_app.command("quarantine")
@errors
def quarantine_command(
    since: Annotated[
        str,
        typer.Option(help=f"Received since: an age ({DURATION_FORMS}) or an ISO time."),
    ] = "7d",
    until: Annotated[
        str | None, typer.Option(help="End (exclusive): an age or an ISO time; default now.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Records listed at most.")] = 50,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Feedback that joins no prediction, with the reason (unknown_request_id,
    row_out_of_range, model_mismatch, no_prediction_for_key). It re-joins by itself when
    the prediction reaches the log."""
    from conveyor.monitoring.quality import quarantined

    start = parse_since(since, option="--since")
    end = parse_since(until, option="--until")
    with open_project(project) as proj:
        found = quarantined(
            proj,
            since=start,  # type: ignore[arg-type]  # parse_since of a str is a datetime
            until=end,
            limit=limit,
        )
    if as_json:
        echo_json(found)
        return
    from rich.markup import escape
    from rich.table import Table

    out = console()
    reasons = ", ".join(f"{n:,} {r}" for r, n in sorted(found["reasons"].items())) or "none"
    out.print(
        f"{found['quarantined']:,} of {found['records']:,} feedback records join no "
        f"prediction ({reasons})",
        soft_wrap=True,
    )
    if found["feedback"]:
        table = Table(title_justify="left")
        for column in ("time", "request id / key", "row", "label", "value", "reason"):
            table.add_column(column)
        for f in found["feedback"]:
            named = f["request_id"] or f"{f['model']} {f['keys']}"
            table.add_row(
                f["time"][:19],
                escape(str(named)),
                str(f["row"]),
                escape(str(f["label"])),
                "-" if f["value"] is None else f"{f['value']:g}",
                f["reason"],
            )
        out.print(table)


@feedback_app.command("show")
@errors
def show_command(
    request_id: Annotated[str, typer.Argument(help="The request id the server answered with.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A prediction and every feedback record it received, oldest first (the last one
    counts; the earlier ones are kept)."""
    with open_project(project) as proj:
        from conveyor.monitoring.feedback import feedback_for

        predictions = proj.events.query(kind="prediction", request_id=request_id, limit=10).items
        found = feedback_for(proj, request_id)
    answered: list[dict[str, Any]] = [
        {
            "time": e.time.isoformat(),
            "model": e.subject,
            "version": e.subject_version,
            "arm": e.payload.get("arm"),
            "output": e.payload.get("output"),
        }
        for e in predictions
    ]
    if as_json:
        echo_json({"request_id": request_id, "predictions": answered, "feedback": found})
        return
    from rich.markup import escape

    out = console()
    if not answered:
        out.print(
            f"no prediction with request id {escape(request_id)} (its feedback is quarantined)"
        )
    for p in answered:
        out.print(
            f"{p['time'][:19]} {escape(str(p['model']))}@{p['version']} ({escape(str(p['arm']))}): "
            f"{escape(str(p['output']))}",
            soft_wrap=True,
        )
    for i, f in enumerate(found):
        mark = "counts" if i == len(found) - 1 else "overwritten"
        out.print(
            f"  {f['time'][:19]} row {f['row']}: label {escape(str(f['label']))}, value "
            f"{f['value']} ({f['source']}, {escape(str(f['actor']))}) " + escape(f"[{mark}]"),
            soft_wrap=True,
        )


@errors
def quality_command(
    model: Annotated[str, typer.Argument(help="The model.")],
    since: Annotated[
        str, typer.Option(help=f"Start: an age ({DURATION_FORMS}) or an ISO time.")
    ] = "7d",
    until: Annotated[
        str | None, typer.Option(help="End (exclusive): an age or an ISO time; default now.")
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="Window length (default monitoring.quality.window).")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Only this version.")] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="A metric (repeat; default: the task's).")
    ] = None,
    drift: Annotated[
        bool, typer.Option("--drift", help="Also judge concept drift (the last window).")
    ] = False,
    record: Annotated[
        bool,
        typer.Option(
            "--record",
            help="With --drift: save the judgment as a report and, when it is drift, record "
            "drift.detected, which retraining triggers listen for (role deployer).",
        ),
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Model quality from feedback per version, arm and window: the metrics the training
    gates use, on the predictions labelled so far (late labels count in their prediction's
    window)."""
    from conveyor.monitoring.quality import concept_drift, quality_report

    start = parse_since(since, option="--since")
    end = parse_since(until, option="--until")
    length = None if window is None else parse_duration(window, "--window")
    with open_project(project) as proj:
        # Recording writes a report and drift.detected: role deployer, as monitor drift.
        who = authorized(proj, "monitoring.drift") if record else None
        report = quality_report(
            proj,
            model,
            since=start,  # type: ignore[arg-type]  # parse_since of a str is a datetime
            until=end,
            window=length,
            version=version,
            metrics=metric or None,
        )
        judged = concept_drift(proj, model, at=end, version=version) if drift or record else None
        report_id = None
        if judged is not None and record:
            from conveyor.monitoring.quality import record_concept_drift

            report_id = record_concept_drift(proj, judged, actor=who)
    body = report.to_dict()
    if judged is not None:
        body["concept_drift"] = {**judged.to_dict(), "report_id": report_id}
    if as_json:
        echo_json(body)
        return
    _print(body)


def _print(report: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    fb = report["feedback"]
    table = Table(
        title=f"quality of {report['model']} ({report['task'] or 'no labels yet'}), "
        f"{report['since'][:19]} to {report['until'][:19]} UTC, {report['window_s']:g} s windows",
        title_justify="left",
        caption=f"{fb['records']:,} feedback records, {fb['joined']:,} joined, "
        f"{fb['overwritten']:,} overwritten; {report['seconds']:.3f} s",
    )
    columns = ["window", "version", "arm", "predictions", "labelled", *report["metrics"]]
    for column in columns:
        table.add_column(column, justify="left" if column in ("window", "arm") else "right")
    for w in report["windows"]:
        table.add_row(
            w["window"][:16],
            escape(str(w["version"])),
            escape(str(w["arm"])),
            f"{w['predictions']:,}",
            f"{w['labelled']:,}",
            *("-" if w.get(m) is None else f"{w[m]:.4f}" for m in report["metrics"]),
        )
    out = console()
    out.print(table)
    judged = report.get("concept_drift")
    if judged is not None:
        style = {"drift": "red", "ok": "green"}.get(judged["status"], "yellow")
        out.print(f"concept drift: [{style}]{judged['status']}[/]: {escape(judged['detail'])}")
    for note in report["notes"]:
        out.print(f"[dim]note: {escape(note)}[/]", soft_wrap=True)
