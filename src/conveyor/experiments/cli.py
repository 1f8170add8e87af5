"""``conveyor experiment start|status|report|stop`` and ``conveyor flag ...``.

::

    conveyor experiment start checkout fraud --arms control=3,treatment=4 \\
        --metric conversion --baseline 0.10 --mde 0.02 --guardrail error_rate \\
        --guardrail p95_latency
    conveyor experiment status checkout --json
    conveyor experiment report checkout          # saved; ship / do not ship / keep running
    conveyor experiment stop checkout --winner treatment

    conveyor flag create fraud beta-v4 --version 4 --match group=beta --percent 5
    conveyor flag ramp fraud beta-v4 25 | target fraud beta-v4 country=fr
    conveyor flag kill fraud beta-v4 --reason "p99 up" | delete fraud beta-v4
    conveyor flag list [MODEL] | show fraud beta-v4
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.cli.common import JsonOpt, ProjectOpt, authorized, echo_json, errors, open_project

__all__ = ["experiment_app", "flag_app"]

experiment_app = typer.Typer(
    help="A-B experiments: arms on the router, a planned sample size, statistics that "
    "resist peeking, and a recommendation."
)
flag_app = typer.Typer(
    help="Feature flags on a model's route: target cohorts, ramp a percentage, kill switch."
)

NameArg = Annotated[str, typer.Argument(help="The experiment's name (or id).")]
ReasonOpt = Annotated[str | None, typer.Option(help="Why (recorded).")]


def _show(found: dict[str, Any]) -> None:
    d = found
    arms = ", ".join(f"{a['arm']}={d['model']}@{a['version']}" for a in d["arms"])
    design = d["design"]
    typer.echo(
        f"experiment {d['name']}: {d['status']}; {arms}; primary {design['primary']} "
        f"(MDE {design['mde']}{' relative' if design['relative'] else ''}, alpha "
        f"{design['alpha']}, power {design['power']}): {design['planned_n']} per arm"
    )
    if design["guardrails"]:
        typer.echo(f"  guardrails: {', '.join(g['name'] for g in design['guardrails'])}")
    last = d.get("last_report")
    if last:
        typer.echo(
            f"  last report {last['report_id']}: {last['recommendation']} ({last['reason']})"
        )


def _judgment(body: dict[str, Any]) -> None:
    typer.echo(f"recommendation: {body['recommendation'].upper()} ({body['reason']})")
    p = body["primary"]
    typer.echo(
        f"primary {p['name']}: control {_arm(p['control'])}, treatment {_arm(p['treatment'])}"
    )
    fx, sq = p["fixed_horizon"], p["sequential"]
    typer.echo(
        f"  difference {_num(fx['diff'])}: fixed-horizon CI {_ci(fx['ci'])} p {_num(fx['p_value'])}"
        f"; always-valid CI {_ci(sq['ci'])} p {_num(sq['p_value'])}"
    )
    for g in body["guardrails"]:
        typer.echo(
            f"guardrail {g['name']}: {'WORSE' if g['worse'] else 'ok'} (difference "
            f"{_num(g['sequential']['diff'])}, always-valid CI {_ci(g['sequential']['ci'])})"
        )
    srm = body["srm"]
    typer.echo(
        f"sample ratio: {srm['counts']} (p {_num(srm['p_value'])}"
        f"{', MISMATCH' if srm['mismatch'] else ''}); {body['smallest_arm_n']} of "
        f"{body['planned_n_per_arm']} planned per arm"
    )


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _ci(ci: list[Any]) -> str:
    return f"[{_num(ci[0])}, {_num(ci[1])}]"


def _arm(a: dict[str, Any]) -> str:
    return f"{_num(a['mean'])} {_ci(a['ci'])} n={a['n']}"


@experiment_app.command("start")
@errors
def start_command(
    name: NameArg,
    model: Annotated[str, typer.Argument(help="The model whose route is split.")],
    arms: Annotated[
        str, typer.Option(help="label=VERSION[:WEIGHT],label=VERSION[:WEIGHT]; control first.")
    ],
    metric: Annotated[str, typer.Option(help="Primary metric: conversion, revenue, accuracy...")],
    mde: Annotated[float, typer.Option(help="Minimum detectable effect (absolute).")],
    relative: Annotated[bool, typer.Option(help="The MDE is a fraction of the baseline.")] = False,
    baseline: Annotated[float | None, typer.Option(help="Baseline rate (or mean).")] = None,
    sd: Annotated[float | None, typer.Option(help="Standard deviation of a mean metric.")] = None,
    alpha: Annotated[float | None, typer.Option(help="False positive rate.")] = None,
    power: Annotated[float | None, typer.Option(help="Designed power.")] = None,
    guardrail: Annotated[
        list[str] | None, typer.Option(help="error_rate, p95_latency, conversion... (repeat).")
    ] = None,
    sticky_header: Annotated[
        str | None, typer.Option(help="Header keeping a user on one arm (default x-user-id).")
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start an experiment: the route splits MODEL's traffic between the arms."""
    with open_project(project) as proj:
        who = authorized(proj, "experiments.manage")
        found = proj.experiments.start(
            name,
            model,
            arms,
            primary=metric,
            mde=mde,
            relative=relative,
            baseline=baseline,
            sd=sd,
            alpha=alpha,
            power=power,
            guardrails=guardrail or [],
            sticky_header=sticky_header,
            actor=who,
        )
        echo_json(found.to_dict()) if as_json else _show(found.to_dict())


@experiment_app.command("status")
@errors
def status_command(
    name: Annotated[str | None, typer.Argument(help="An experiment; none: all.")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """An experiment's design and last verdict (or every experiment's)."""
    with open_project(project) as proj:
        authorized(proj, "experiments.read")
        if name is not None:
            found = proj.experiments.get(name).to_dict()
            echo_json(found) if as_json else _show(found)
            return
        items = [e.to_dict() for e in proj.experiments.list()]
        if as_json:
            echo_json({"items": items, "next_cursor": None})
            return
        for item in items:
            _show(item)
        if not items:
            typer.echo("no experiments")


@experiment_app.command("report")
@errors
def report_command(
    name: NameArg,
    save: Annotated[bool, typer.Option(help="Save the report (and conclude).")] = True,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Judge the experiment now: per-arm results with intervals, SRM, guardrails, and
    ship / do not ship / keep running. Saved (and the decision audited) unless --no-save."""
    with open_project(project) as proj:
        # saving writes a report and may record the conclusion: the manage role
        authorized(proj, "experiments.manage" if save else "experiments.read")
        body = proj.experiments.report(name, save=save)
        if as_json:
            echo_json(body)
            return
        _judgment(body)
        if "report_id" in body:
            typer.echo(f"report {body['report_id']}")


@experiment_app.command("stop")
@errors
def stop_command(
    name: NameArg,
    winner: Annotated[
        str | None, typer.Option(help="The arm that serves everyone after (default: control).")
    ] = None,
    reason: ReasonOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop the experiment: every request goes to the winner's (or the control's) version."""
    with open_project(project) as proj:
        who = authorized(proj, "experiments.manage")
        found = proj.experiments.stop(name, actor=who, winner=winner, reason=reason).to_dict()
        echo_json(found) if as_json else _show(found)


# -- flags ---------------------------------------------------------------------------------

ModelArg = Annotated[str, typer.Argument(help="The model whose route holds the flag.")]
FlagArg = Annotated[str, typer.Argument(help="The flag's name.")]


def _flag(flag: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(flag)
        return
    match = ",".join(f"{k}={v}" for k, v in flag["match"].items()) or "everyone"
    typer.echo(
        f"flag {flag['model']}/{flag['name']}: {flag['state']}, {flag['percent']:g} % of "
        f"{match} -> version {flag['version']} (revision {flag['revision']})"
    )
    for h in flag.get("history", []):
        typer.echo(
            f"  r{h['revision']} {h['action']} by {h['actor']} at {h['at']}"
            + (f": {h['reason']}" if h["reason"] else "")
        )


@flag_app.command("create")
@errors
def flag_create(
    model: ModelArg,
    name: FlagArg,
    version: Annotated[int, typer.Option(help="The version matching requests get.")],
    match: Annotated[str | None, typer.Option(help="key=value[,key=value]; none: all.")] = None,
    percent: Annotated[float, typer.Option(help="Share of matching keys, 0-100.")] = 0.0,
    description: Annotated[str | None, typer.Option(help="What the flag is for.")] = None,
    reason: ReasonOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a flag on MODEL's live route (off at 0 % until ramped)."""
    with open_project(project) as proj:
        who = authorized(proj, "flags.manage")
        flag = proj.flags.create(
            model,
            name,
            version=version,
            match=match,
            percent=percent,
            description=description,
            reason=reason,
            actor=who,
        )
        _flag(flag, as_json)


@flag_app.command("list")
@errors
def flag_list(
    model: Annotated[str | None, typer.Argument(help="Only this model's flags.")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every flag (or a model's)."""
    with open_project(project) as proj:
        authorized(proj, "flags.read")
        items = proj.flags.list(model)
        if as_json:
            echo_json({"items": items, "next_cursor": None})
            return
        for item in items:
            _flag(item, False)
        if not items:
            typer.echo("no flags")


@flag_app.command("show")
@errors
def flag_show(
    model: ModelArg, name: FlagArg, project: ProjectOpt = None, as_json: JsonOpt = False
) -> None:
    """A flag and its audited history."""
    with open_project(project) as proj:
        authorized(proj, "flags.read")
        _flag(proj.flags.show(model, name), as_json)


@flag_app.command("ramp")
@errors
def flag_ramp(
    model: ModelArg,
    name: FlagArg,
    percent: Annotated[float, typer.Argument(help="Share of matching keys, 0-100.")],
    reason: ReasonOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ramp the flag to PERCENT (turns a killed flag on again)."""
    with open_project(project) as proj:
        who = authorized(proj, "flags.manage")
        _flag(proj.flags.ramp(model, name, percent, actor=who, reason=reason), as_json)


@flag_app.command("target")
@errors
def flag_target(
    model: ModelArg,
    name: FlagArg,
    match: Annotated[str, typer.Argument(help="key=value[,key=value]; '' for everyone.")],
    reason: ReasonOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Target the flag at the requests whose attributes match."""
    with open_project(project) as proj:
        who = authorized(proj, "flags.manage")
        _flag(proj.flags.target(model, name, match, actor=who, reason=reason), as_json)


@flag_app.command("kill")
@errors
def flag_kill(
    model: ModelArg,
    name: FlagArg,
    reason: ReasonOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The kill switch: the flag's rule leaves the route at once (one route revision)."""
    with open_project(project) as proj:
        who = authorized(proj, "flags.manage")
        _flag(proj.flags.kill(model, name, actor=who, reason=reason), as_json)


@flag_app.command("delete")
@errors
def flag_delete(
    model: ModelArg,
    name: FlagArg,
    reason: ReasonOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete the flag (its rule leaves the route; its history stays)."""
    with open_project(project) as proj:
        who = authorized(proj, "flags.manage")
        _flag(proj.flags.delete(model, name, actor=who, reason=reason), as_json)
