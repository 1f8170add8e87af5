"""``conveyor readiness``: the production readiness report.

::

    conveyor readiness                  # live monitors, feedback, security, compliance
    conveyor readiness --load-test      # and a few seconds at the target rate (deployer)
    conveyor readiness --json
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from conveyor.cli.common import (
    API_KEY_ENV,
    JsonOpt,
    ProjectOpt,
    authorized,
    check_failed,
    console,
    echo_json,
    errors,
    open_project,
)

__all__ = ["readiness_command"]


@errors
def readiness_command(
    load_test: Annotated[
        bool,
        typer.Option(
            "--load-test/--no-load-test",
            help="Also send requests at the target rate (slos.throughput_rps) to the running "
            "server for readiness.load_test.duration_s (role deployer).",
        ),
    ] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hold the project against the success criteria of its spec (slos: and readiness:):
    quality on production feedback, latency, throughput, availability, security,
    compliance and the business metric. Saves the report; exit code 1 when it failed."""
    from conveyor.readiness.report import readiness_report

    with open_project(project) as proj:
        who = authorized(proj, "readiness.load_test" if load_test else "readiness.read")
        made = readiness_report(
            proj, load_test=load_test, token=os.environ.get(API_KEY_ENV) or None, actor=who
        )
    if as_json:
        echo_json(made.to_dict())
    else:
        _print(made.to_dict())
    if not made.report.passed:
        check_failed()


def _print(made: dict[str, Any]) -> None:
    from rich.markup import escape

    out = console()
    out.print(
        f"production readiness, {made['since'][:19]} to {made['until'][:19]} UTC "
        f"({', '.join(made['models']) or 'no model'})",
        soft_wrap=True,
    )
    colour = {"pass": "green", "warn": "yellow", "fail": "red"}
    area = None
    for item in made["items"]:
        if item["area"] != area:
            area = item["area"]
            out.print(f"[bold]{area}[/]")
        status = item["status"]
        how = item["detail"].split(". Fix: ")[0]
        out.print(
            f"  [{colour[status]}]{status}[/] {escape(item['name'])}: "
            f"{escape(_short(item['observed']))} (target {escape(_short(item['threshold']))}) "
            f"- {escape(how)}",
            soft_wrap=True,
        )
        if status != "pass":
            out.print(f"       [dim]fix: {escape(item['fix'])}[/]", soft_wrap=True)
    out.print(f"verdict: {made['verdict']} (report {made['id']} saved; {made['seconds']:.2f} s)")


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)[:60]
