"""``conveyor monitor drift MODEL``: one live drift check, recorded.

::

    conveyor monitor drift fraud                        # the last day against its training data
    conveyor monitor drift fraud --window 1h --json
    conveyor monitor drift fraud --reference-window 2026-11-01T00:00/2026-11-08T00:00
    conveyor monitor drift fraud --no-record            # compute and print only (role viewer)

Recording saves the drift report and writes ``monitoring.drift_checked`` and, when the
report failed, ``drift.detected`` (which a model's ``retrain.on_events`` may listen for):
role deployer (action ``monitoring.drift``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

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
from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["drift_command", "reference_window"]


@errors
def drift_command(
    model: Annotated[str, typer.Argument(help="The model whose live traffic to check.")],
    window: Annotated[str, typer.Option(help=f"How much recent traffic: {DURATION_FORMS}.")] = "1d",
    since: Annotated[
        str | None,
        typer.Option(help="Start instead of --window: an age or an ISO time."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="End (exclusive): an age or an ISO time; default now.")
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(help="The version to check (default: the champion, else the busiest)."),
    ] = None,
    reference_window_: Annotated[
        str | None,
        typer.Option(
            "--reference-window",
            help="SINCE/UNTIL (ISO times or ages) of traffic to compare with, instead of the "
            "version's training data.",
        ),
    ] = None,
    max_rows: Annotated[int, typer.Option(help="Live rows compared at most.")] = 1_000_000,
    record: Annotated[
        bool,
        typer.Option(
            "--record/--no-record",
            help="Save the report and record the check and drift.detected (role deployer).",
        ),
    ] = True,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare a model's sampled live inputs and predictions with its training data (or a
    pinned window of traffic), and estimate a classifier's accuracy without labels (CBPE)."""
    from datetime import UTC, datetime

    from conveyor.monitoring.drift_live import live_drift

    with open_project(project) as proj:
        who = authorized(proj, "monitoring.drift" if record else "monitoring.read")
        now = datetime.now(UTC)
        end = parse_since(until, now, option="--until") or now
        start = parse_since(since, now, option="--since") or end - parse_duration(
            window, "--window"
        )
        pinned = None if reference_window_ is None else reference_window(reference_window_, now)
        found = live_drift(
            proj,
            model,
            since=start,
            until=end,
            version=version,
            reference_window=pinned,
            max_rows=max_rows,
            record=record,
            actor=who,
        )
    if as_json:
        echo_json(found.to_dict())
        return
    _print(found.to_dict())


def reference_window(text: str, now: datetime) -> tuple[datetime, datetime]:
    """``SINCE/UNTIL``, each an ISO time or an age."""
    parts = text.split("/")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise InvalidInputError(
            f"--reference-window {text!r}: expected SINCE/UNTIL, e.g. "
            "2026-11-01T00:00/2026-11-08T00:00 or 14d/7d",
            field="reference_window",
        )
    since = parse_since(parts[0], now, option="--reference-window")
    until = parse_since(parts[1], now, option="--reference-window")
    assert since is not None and until is not None  # parse_since of a str is a datetime
    return since, until


def _print(found: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    verdict = "[red]drift detected[/]" if found["detected"] else "[green]no drift[/]"
    ref = found["reference"]
    out.print(
        f"{escape(found['model'])}@{found['version']}: {verdict} "
        f"({found['share']:.0%} of inputs drifted); {found['current']['rows']:,} live rows "
        f"against {escape(str(ref['description']))} ({ref['rows']:,} rows); report "
        f"{found['report_id']}",
        soft_wrap=True,
    )
    table = Table(title_justify="left")
    for column in ("column", "judgment", "test", "effect", "floor", "p adj", "important"):
        table.add_column(column)
    listed = [(n, c) for n, c in found["columns"].items()]
    listed += [(f"prediction:{n}", c) for n, c in (found["predictions"] or {}).items()]
    for name, col in listed:
        style = {"drift": "red", "significant_below_floor": "yellow"}.get(col.get("judgment"), "")
        judgment = str(col.get("judgment"))
        table.add_row(
            escape(name),
            f"[{style}]{judgment}[/]" if style else judgment,
            str(col.get("test") or "-"),
            _num(col.get("effect_size")),
            _num(col.get("effect_size_floor")),
            _num(col.get("p_value_adjusted")),
            "yes" if name in found["important"] else "",
        )
    out.print(table)
    if found["cbpe"]:
        c = found["cbpe"]
        auc = f", ROC AUC {c['roc_auc']:.3f}" if c.get("roc_auc") is not None else ""
        out.print(
            f"CBPE estimate (no labels): accuracy {c['accuracy']:.3f} "
            f"+- {c['accuracy_std']:.3f}{auc}",
            soft_wrap=True,
        )
    realized = found.get("cbpe_realized")
    if realized:
        out.print(
            f"  labels arrived for {realized['labelled']:,} rows: realized accuracy "
            f"{realized['accuracy']:.3f}, estimated {realized['estimate']['accuracy']:.3f} "
            f"on them (error {realized['accuracy_error']:+.3f})",
            soft_wrap=True,
        )
    for note in found["notes"]:
        out.print(f"[dim]note: {escape(note)}[/]", soft_wrap=True)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"
