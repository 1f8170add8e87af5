"""``conveyor alerts ...``: incidents, silences, sinks, and a test notification.

::

    conveyor alerts list                      # open incidents, sinks (failing marked), silences
    conveyor alerts list --all --json         # resolved incidents too
    conveyor alerts show ID                   # one incident: its state, deliveries, actions
    conveyor alerts ack ID                    # no more repeats of it (role deployer)
    conveyor alerts silence model=fraud severity=page --for 2h --comment "deploying"
    conveyor alerts unsilence SILENCE_ID
    conveyor alerts test                      # a test notification to every sink
    conveyor alerts rules                     # the rules: from slos: and the spec
    conveyor alerts evaluate                  # evaluate the rules once, now (role deployer)
"""

from __future__ import annotations

from datetime import UTC, datetime
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
)
from conveyor.errors import InvalidInputError
from conveyor.monitoring.alerts.operations import (
    acknowledge,
    add_silence,
    alert_detail,
    end_silence,
    send_test,
)
from conveyor.monitoring.alerts.operations import (
    sinks as sink_health,
)

__all__ = ["alerts_app", "parse_matchers"]

alerts_app = typer.Typer(
    help="Alerts: incidents (pending, firing, resolved), silences, sinks; see "
    "monitoring.alerts in the spec.",
    no_args_is_help=True,
)


def parse_matchers(items: list[str]) -> dict[str, str]:
    """``label=value`` pairs (a value ending in ``*`` matches a prefix)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise InvalidInputError(
                f"matcher {item!r}: expected label=value, e.g. model=fraud or alertname=slo_*",
                field="matchers",
            )
        out[name.strip()] = value.strip()
    if not out:
        raise InvalidInputError(
            "give one or more matchers label=value (model=fraud, severity=page, alertname=...)",
            field="matchers",
        )
    return out


@alerts_app.command("list")
@errors
def list_command(
    all_: Annotated[bool, typer.Option("--all", help="Resolved incidents too.")] = False,
    model: Annotated[str | None, typer.Option(help="Only this model's alerts.")] = None,
    limit: Annotated[int, typer.Option(help="Incidents listed at most.")] = 50,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open incidents (or all), the sinks with their health, and the active silences."""
    from conveyor.monitoring.alerts.store import SqlStore

    with open_project(project) as proj:
        authorized(proj, "alerts.read")
        store = SqlStore(proj.store)
        incidents = store.incidents(state=None if all_ else "open", model=model, limit=limit)
        sinks = sink_health(proj, store)
        silences = store.silence_list(active_at=datetime.now(UTC))
    if as_json:
        echo_json(
            {
                "items": [i.to_dict() for i in incidents],
                "sinks": sinks,
                "silences": [s.to_dict() for s in silences],
                "next_cursor": None,
            }
        )
        return
    from rich.markup import escape
    from rich.table import Table

    out = console()
    table = Table(title="alerts", title_justify="left")
    for column in ("id", "state", "severity", "rule", "model", "value", "since", "count", "note"):
        table.add_column(column)
    for i in incidents:
        note = i.suppressed or ("acked by " + str(i.acked_by) if i.acked_at else "")
        colour = {"firing": "red", "pending": "yellow", "resolved": "green"}[i.state]
        table.add_row(
            i.id,
            f"[{colour}]{i.state}[/]",
            i.severity,
            escape(i.rule),
            escape(i.model or "-"),
            "-" if i.value is None else f"{i.value:.4g} {i.op} {i.threshold:g}",
            (i.fired_at or i.started_at).strftime("%Y-%m-%d %H:%M"),
            str(i.count),
            escape(note),
        )
    out.print(table if incidents else "no open alerts")
    if sinks:
        sink_table = Table(title="sinks", title_justify="left")
        for column in ("sink", "kind", "state", "delivered", "failed", "last error"):
            sink_table.add_column(column)
        for s in sinks:
            state = "[red]failing[/]" if s["state"] == "failing" else f"[green]{s['state']}[/]"
            sink_table.add_row(
                escape(s["name"]),
                s["kind"],
                state,
                str(s["delivered"]),
                str(s["failed"]),
                escape(s["last_error"] or ""),
            )
        out.print(sink_table)
    for silence in silences:
        out.print(
            f"silence {silence.id}: "
            f"{', '.join(f'{k}={v}' for k, v in silence.matchers.items())} "
            f"until {silence.ends_at.isoformat()} ({escape(silence.comment or '')})",
            soft_wrap=True,
        )


@alerts_app.command("show")
@errors
def show_command(
    alert_id: Annotated[str, typer.Argument(help="The alert (incident) id.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One incident: its state, counts, suppression, deliveries and review items."""
    from conveyor.monitoring.alerts.store import SqlStore

    with open_project(project) as proj:
        authorized(proj, "alerts.read")
        store = SqlStore(proj.store)
        found = alert_detail(store, alert_id)
    if as_json:
        echo_json(found)
        return
    out = console()
    for key, value in found.items():
        if key in ("deliveries", "reviews", "labels"):
            continue
        out.print(f"{key:>14}: {value}", soft_wrap=True, markup=False)
    out.print(f"{'labels':>14}: {found['labels']}", markup=False)
    for d in found["deliveries"]:
        verdict = "ok" if d["ok"] else f"FAILED ({d['error']})"
        out.print(
            f"  delivery {d['at']} {d['kind']} -> {d['sink']}: {verdict}, "
            f"{d['attempts']} attempt(s)",
            markup=False,
            soft_wrap=True,
        )
    for r in found["reviews"]:
        out.print(f"  review {r['id']} ({r['state']}): {r['note'] or ''}", markup=False)


@alerts_app.command("ack")
@errors
def ack_command(
    alert_id: Annotated[str, typer.Argument(help="The alert (incident) id.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Acknowledge an alert: it is not notified again (repeat_interval) while it fires."""
    with open_project(project) as proj:
        who = authorized(proj, "alerts.manage")
        incident = acknowledge(proj, alert_id, who)
    if as_json:
        echo_json(incident.to_dict())
        return
    console().print(f"acknowledged {incident.id} ({incident.rule}) as {incident.acked_by}")


@alerts_app.command("silence")
@errors
def silence_command(
    matchers: Annotated[
        list[str],
        typer.Argument(help="label=value matchers: model, alertname, severity, metric..."),
    ],
    for_: Annotated[
        str, typer.Option("--for", help=f"How long: {DURATION_FORMS} (at most 30d).")
    ] = "1h",
    comment: Annotated[str | None, typer.Option(help="Why (shown in list).")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hold the notifications of alerts whose labels match, until the silence expires."""
    found = parse_matchers(matchers)
    span = parse_duration(for_, "--for")
    with open_project(project) as proj:
        who = authorized(proj, "alerts.manage")
        silence = add_silence(proj, found, datetime.now(UTC) + span, who, comment)
    if as_json:
        echo_json(silence.to_dict())
        return
    console().print(f"silence {silence.id} until {silence.ends_at.isoformat()}")


@alerts_app.command("unsilence")
@errors
def unsilence_command(
    silence_id: Annotated[str, typer.Argument(help="The silence id.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End a silence now."""
    with open_project(project) as proj:
        who = authorized(proj, "alerts.manage")
        silence = end_silence(proj, silence_id, who)
    if as_json:
        echo_json(silence.to_dict())
        return
    console().print(f"silence {silence.id} ended")


@alerts_app.command("test")
@errors
def send_test_command(
    severity: Annotated[
        str, typer.Option(help="Severity of the test alert: page, ticket or info.")
    ] = "info",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the deliveries.")] = 60.0,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a test notification to every sink that takes its severity; each sink's result."""
    with open_project(project) as proj:
        authorized(proj, "alerts.test")
        results = send_test(proj, severity, timeout)
    if as_json:
        echo_json({"items": results, "next_cursor": None})
    else:
        out = console()
        if not results:
            out.print("no sink takes this severity (monitoring.alerts.sinks)")
        for r in results:
            verdict = "ok" if r["ok"] else f"FAILED: {r['error']}"
            out.print(f"{r['sink']}: {verdict} ({r['attempts']} attempt(s))", markup=False)
    if any(not r["ok"] for r in results):
        raise typer.Exit(1)


@alerts_app.command("rules")
@errors
def rules_command(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """The rules evaluated: derived from slos: for each model, then the spec's own."""
    from conveyor.monitoring.alerts.rules import derive_rules

    with open_project(project) as proj:
        authorized(proj, "alerts.read")
        rules = derive_rules(proj.spec)
    if as_json:
        echo_json({"items": [r.to_dict() for r in rules], "next_cursor": None})
        return
    out = console()
    for r in rules:
        out.print(f"{r.name} [{r.severity}, {r.source}]: {r.describe()}", markup=False)
    if not rules:
        out.print("no rules (slos: and monitoring.alerts.rules are empty)")


@alerts_app.command("evaluate")
@errors
def evaluate_command(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the deliveries.")] = 60.0,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate every rule once, now: notify, write events and act as conveyor serve does
    (for a cron job, or a project served without the loop)."""
    from conveyor.monitoring.alerts.evaluator import Evaluator

    with open_project(project) as proj:
        who = authorized(proj, "alerts.evaluate")
        with Evaluator(proj) as evaluator:
            claim(proj, evaluator.settings, who)
            result = evaluator.evaluate()
            evaluator.dispatcher.drain(timeout)
    if as_json:
        echo_json(result.to_dict())
        return
    out = console()
    for name, value in result.values.items():
        shown = result.errors.get(name) or ("no data" if value is None else f"{value:.4g}")
        out.print(f"{name}: {shown}", markup=False)
    out.print(
        f"{len(result.fired)} fired, {len(result.resolved)} resolved, "
        f"{len(result.notifications)} notification(s)"
    )


def claim(proj: Any, settings: Any, who: str) -> None:
    """Take the evaluator's lease (as conveyor serve does), so an evaluation from the CLI
    and a server's never both notify; ConflictError while a server holds it."""
    import os

    from conveyor.errors import ConflictError
    from conveyor.monitoring.alerts.store import take_lease

    ttl = 3 * float(settings.evaluation_interval_s)
    if not take_lease(proj.store, f"{who}:{os.getpid()}", ttl, datetime.now(UTC)):
        raise ConflictError(
            "another evaluator (a conveyor serve) holds the alerts' lease: it evaluates the "
            "rules already; its lease lapses 3 evaluation intervals after it stops",
            reason="lease_held",
        )
