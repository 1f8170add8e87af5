"""``conveyor smoke`` and ``conveyor promote``.

::

    conveyor smoke record fraud@3                  # golden requests from the hold-out
    conveyor smoke --env staging                   # health, metadata, golden set, latency
    conveyor promote fraud@3 --from staging --approver ana    # into the next environment
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from conveyor.cli.common import (
    JsonOpt,
    ProjectOpt,
    authorized,
    check_failed,
    echo_json,
    echo_report,
    errors,
    open_project,
)

if TYPE_CHECKING:
    from conveyor.checks.result import Report
    from conveyor.project import Project

__all__ = ["app", "smoke_app"]

app = typer.Typer()
smoke_app = typer.Typer(
    help="Smoke-test a deployed environment: health, metadata, golden requests, latency "
    "(conveyor smoke --env staging); record the golden requests (conveyor smoke record)."
)


@smoke_app.callback(invoke_without_command=True)
@errors
def smoke(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(help="The server to smoke (default: the environment's url)."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Only this model's golden requests; repeatable."),
    ] = None,
    golden: Annotated[
        Path | None,
        typer.Option(help="The golden request set (default: smoke/golden.json)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds each request may take before it fails.")
    ] = 10.0,
    network_ms: Annotated[
        float,
        typer.Option(help="Milliseconds of network added to the SLO's latency budget."),
    ] = 0.0,
    latency_requests: Annotated[
        int,
        typer.Option(
            min=0,
            help="Requests of the latency pass, after the golden one (0: the golden "
            "requests' own times).",
        ),
    ] = 100,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Smoke-test the environment's server (`conveyor smoke --env staging`).

    Exits 1 when a check fails. The report is saved in the environment's store when it
    can be reached (conveyor reports show ID).
    """
    if ctx.invoked_subcommand is not None:
        return
    from conveyor.deploy.smoke import GOLDEN_FILE, GoldenSet, run_smoke, smoke_url

    with open_project(project) as proj:
        authorized(proj, "deploy.smoke")  # its report and event are kept in the store
        target = smoke_url(proj.spec, url)
        golden_set = GoldenSet.read(golden or proj.root / GOLDEN_FILE)
        report = run_smoke(
            proj.spec,
            target,
            golden=golden_set,
            models=model,
            timeout_s=timeout,
            network_ms=network_ms,
            latency_requests=latency_requests,
        )
        saved = _save(proj, report, target)
    echo_report(report, as_json)
    if not as_json and not saved:
        typer.secho("the report was not saved: the environment's store cannot be reached", err=True)
    if not report.passed:
        check_failed()


def _save(proj: Project, report: Report, url: str) -> bool:
    """Save the report and its event where the environment keeps them; False if unreachable."""
    from conveyor.checks.persist import save_report
    from conveyor.errors import ConveyorError

    try:
        save_report(proj.store, report)
        proj.events.record(
            "deploy.smoke",
            subject=report.subject,
            payload={
                "environment": proj.spec.environment or "",
                "url": url,
                "passed": report.passed,
                "report_id": report.id,
            },
        )
    except ConveyorError:
        return False
    return True


@smoke_app.command("record")
@errors
def record(
    ref: Annotated[str, typer.Argument(help="MODEL@N or MODEL@ALIAS whose answers to record.")],
    rows: Annotated[int, typer.Option(help="Hold-out rows to record.")] = 20,
    golden: Annotated[
        Path | None,
        typer.Option(help="The golden request set to write (default: smoke/golden.json)."),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record golden requests: hold-out rows of the model and what REF answers to them.

    Replaces the model's entry in the golden set (kept in git beside the spec).
    """
    from conveyor.deploy.smoke import record_golden

    with open_project(project) as proj:
        result = record_golden(proj, ref, rows=rows, path=golden)
    if as_json:
        echo_json(result)
    else:
        typer.echo(
            f"recorded {result['rows']} golden requests of {result['model']}@{result['version']}"
        )


@app.command()
@errors
def promote(
    ref: Annotated[str, typer.Argument(help="MODEL@N or MODEL@ALIAS in the --from environment.")],
    from_env: Annotated[
        str, typer.Option("--from", help="The environment the version leaves (e.g. staging).")
    ],
    to_env: Annotated[
        str | None,
        typer.Option("--to", help="The environment it enters (default and only: the next)."),
    ] = None,
    approver: Annotated[
        str | None,
        typer.Option(help="Who approved it (required by environments with approval: true)."),
    ] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy a model version into the next environment's registry, with its gate report.

    Refused when its gates did not pass in --from, when the next environment needs an
    approver and none is named, or when --to skips an environment. The key in
    CONVEYOR_API_KEY must be a deployer's in the target environment.
    """
    from conveyor.deploy.promotion import promote_version

    root = None if project is None else project
    result = promote_version(
        root,
        ref,
        from_env=from_env,
        to_env=to_env,
        approver=approver,
        authorize=lambda target: authorized(target, "deploy.promote"),
    )
    if as_json:
        echo_json(result.to_dict())
        return
    what = "already there as" if result.already else "promoted to"
    typer.echo(
        f"{result.source.ref} ({result.from_env}) {what} {result.target.ref} "
        f"({result.to_env}); gate report {result.gate_report}"
        + (f", approved by {result.approver}" if result.approver else "")
    )
