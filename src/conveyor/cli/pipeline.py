"""``conveyor pipeline run|list|history|recover|schedule``.

Mounted by the main CLI as ``app.add_typer(pipeline_app, name="pipeline")``.
A TARGET is ``module:attribute`` or ``path/to/file.py:attribute`` (see
:mod:`conveyor.pipelines.loading`); modules are looked up from the current
folder and the project's. Conveyor errors print as one red line and exit 1;
a pipeline run that does not succeed exits 1 too. Running, recovering and
scheduling need the ``pipelines.run`` action once the project has API keys.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from conveyor.cli.common import (
    DURATION_FORMS,
    CursorOpt,
    JsonOpt,
    ProjectOpt,
    authorized,
    console,
    echo_json,
    echo_list,
    errors,
    open_project,
    parse_duration,
    print_table,
    when,
)
from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from rich.console import Console

    from conveyor.pipelines.definition import Pipeline
    from conveyor.pipelines.results import PipelineRun
    from conveyor.project import Project

__all__ = ["parse_params", "pipeline_app"]

#: Which runner executes the steps (``conveyor.pipelines.runners.RUNNERS``).
RunnerOpt = Annotated[
    str,
    typer.Option(
        "--runner",
        help="What runs the steps: local (this process), or a runner a package registered.",
    ),
]

pipeline_app = typer.Typer(
    help="Run, list, schedule and recover pipelines; show their history.",
    no_args_is_help=True,
)

_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "running": "cyan",
}


def _search_path(proj: Project | None) -> list[Path]:
    return [Path.cwd()] + ([proj.root] if proj is not None else [])


def _secs(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.0f} s"


def _first_line(text: str | None) -> str:
    return "" if not text else text.strip().splitlines()[0]


def _styled(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]"


def parse_params(values: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; a value that parses as JSON (3, 0.5, true, [1]) is that, else text."""
    params: dict[str, Any] = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInputError(
                f"--param {item!r}: expected key=value, e.g. --param day=2026-11-26",
                field="param",
            )
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


# -- run ---------------------------------------------------------------------------------


class _Display:
    """A rich progress line per step: spinner, elapsed time, and a bar when the step reports one."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TaskID,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.tasks: dict[str, TaskID] = {}
        self.lock = threading.Lock()

    def __enter__(self) -> _Display:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_event(self, kind: str, payload: Mapping[str, Any]) -> None:
        from rich.markup import escape

        step = str(payload.get("step", ""))
        with self.lock:
            if kind == "step.started":
                label = f"{escape(step)} (attempt {payload['attempt']}/{payload['max_attempts']})"
                if step in self.tasks:
                    self.progress.update(self.tasks[step], description=label, note="")
                else:
                    self.tasks[step] = self.progress.add_task(label, total=None, note="")
                return
            if kind in ("step.succeeded", "step.failed", "step.retrying", "step.skipped"):
                mark = {
                    "step.succeeded": "[green]ok[/]",
                    "step.failed": "[bold red]failed[/]",
                    "step.retrying": "[yellow]retrying[/]",
                    "step.skipped": "[yellow]skipped[/]",
                }[kind]
                took = payload.get("duration_s")
                detail = escape(_first_line(payload.get("error") or payload.get("reason")))
                when = f" in {_secs(took)}" if isinstance(took, int | float) else ""
                self.console.print(f"  {mark} {escape(step)}{when} {detail}".rstrip())
                if kind != "step.retrying" and step in self.tasks:
                    self.progress.remove_task(self.tasks.pop(step))
            elif kind == "pipeline.crashed":
                self.console.print(
                    f"[bold red]crashed[/] {escape(str(payload.get('pipeline')))} run "
                    f"{payload.get('run_id')}: {escape(str(payload.get('action')))}"
                )
            elif kind == "pipeline.started":
                self.console.print(
                    f"[bold]{escape(str(payload.get('pipeline')))}[/] run {payload.get('run_id')}"
                )

    def on_progress(self, step: str, done: float, total: float | None, message: str | None) -> None:
        with self.lock:
            task = self.tasks.get(step)
            if task is not None:
                self.progress.update(task, completed=done, total=total, note=message or "")


def _print_run(console: Console, run: PipelineRun) -> None:
    from rich.markup import escape
    from rich.table import Table

    title = f"pipeline {run.pipeline} run {run.id}: {_styled(run.status)} in {_secs(run.duration)}"
    table = Table(title=title, title_justify="left")
    for column in ("step", "status", "attempts", "duration", "error"):
        table.add_column(column, overflow="fold")
    for step in run.steps:
        attempts = "-" if step.skipped else str(len(step.attempts))
        table.add_row(
            escape(step.name),
            _styled(step.status),
            attempts,
            _secs(step.duration),
            escape(_first_line(step.error)),
        )
    console.print(table)
    if run.error:
        console.print(f"[red]{escape(run.error)}[/]")


@pipeline_app.command("run")
@errors
def run_command(
    target: Annotated[str, typer.Argument(help="module:attribute or path/to/file.py:attribute")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="key=value, given to steps as ctx.params (repeat)."),
    ] = None,
    runner_name: RunnerOpt = "local",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a pipeline once, now, showing each step as it runs."""
    from conveyor.pipelines.loading import load_pipeline
    from conveyor.pipelines.runners import runner_for

    params = parse_params(param)
    with open_project(project) as proj:
        authorized(proj, "pipelines.run")
        pipeline = load_pipeline(target, search_path=_search_path(proj))
        runner = runner_for(runner_name, proj)
        if as_json:
            result = runner.run(pipeline, params)
            echo_json(result.to_dict())
        else:
            out = console()
            with _Display(out) as display:
                result = runner.run(
                    pipeline, params, listener=display.on_event, progress=display.on_progress
                )
            _print_run(out, result)
    if not result.succeeded:
        raise typer.Exit(1)


# -- list and history ------------------------------------------------------------------


@pipeline_app.command("list")
@errors
def list_command(
    target: Annotated[
        str | None,
        typer.Argument(help="A module or file: list the pipelines it defines. Else: recent runs."),
    ] = None,
    limit: Annotated[int, typer.Option(help="How many recent runs.")] = 20,
    cursor: CursorOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the pipelines a module defines, or (without TARGET) the recent pipeline runs."""
    if target is not None:
        from conveyor.pipelines.loading import load_pipelines

        _print_definitions(load_pipelines(target, search_path=_search_path(None)), as_json)
        return
    from conveyor.pipelines.run_history import runs_with_steps

    with open_project(project) as proj:
        page = proj.store.runs.list(kind="pipeline", limit=limit, cursor=cursor)
        runs = runs_with_steps(proj.store, page.items)
        _print_runs(runs, as_json, "recent pipeline runs", page.next_cursor)


def _print_definitions(pipelines: list[Pipeline], as_json: bool) -> None:
    rows = [
        {
            "name": p.name,
            "steps": [s.name for s in p.order()],
            "schedule": p.schedule,
            "catch_up": p.catch_up,
            "triggers": [t.key for t in p.triggers],
            "retry_crashed": p.retry_crashed,
        }
        for p in pipelines
    ]
    if as_json:
        echo_list(rows)
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="pipelines", title_justify="left")
    for column in ("name", "steps (in order)", "schedule", "triggers"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            escape(str(row["name"])),
            escape(" -> ".join(row["steps"])),  # type: ignore[arg-type]
            escape(str(row["schedule"] or "-")),
            escape(", ".join(row["triggers"]) or "-"),  # type: ignore[arg-type]
        )
    console().print(table)


def _print_runs(
    runs: list[PipelineRun], as_json: bool, title: str, next_cursor: str | None
) -> None:
    if as_json:
        echo_list((r.to_dict() for r in runs), next_cursor)
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("run", "pipeline", "status", "started", "duration", "steps", "error"):
        table.add_column(column, overflow="fold")
    for run in runs:
        steps = ", ".join(
            f"{s.name}:{s.status}" + (f" x{len(s.attempts)}" if len(s.attempts) > 1 else "")
            for s in run.steps
        )
        table.add_row(
            run.id,
            escape(run.pipeline),
            _styled(run.status),
            when(run.started_at),
            _secs(run.duration),
            escape(steps),
            escape(_first_line(run.error)),
        )
    print_table(table, next_cursor)


@pipeline_app.command("history")
@errors
def history_command(
    name: Annotated[str, typer.Argument(help="The pipeline's name.")],
    limit: Annotated[int, typer.Option(help="Runs per page, newest first.")] = 20,
    cursor: CursorOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A pipeline's runs, newest first, with each step's status, attempts and error."""
    from conveyor.pipelines.run_history import history

    with open_project(project) as proj:
        page = history(proj.store, name, limit=limit, cursor=cursor)
        _print_runs(list(page.items), as_json, f"history of {name}", page.next_cursor)


# -- recover and schedule ---------------------------------------------------------------


@pipeline_app.command("recover")
@errors
def recover_command(
    targets: Annotated[
        list[str] | None,
        typer.Argument(help="Pipelines to re-run if they ask for retry_crashed (TARGET...)."),
    ] = None,
    stale_after: Annotated[
        str,
        typer.Option(help=f"How long without a heartbeat makes a run dead: {DURATION_FORMS}."),
    ] = "1m",
    runner_name: RunnerOpt = "local",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fail (or re-run) pipeline runs left "running" by a process that died."""
    from conveyor.pipelines.loading import load_pipelines
    from conveyor.pipelines.runners import runner_for

    stale = parse_duration(stale_after, "--stale-after").total_seconds()
    with open_project(project) as proj:
        authorized(proj, "pipelines.run")
        pipelines = [
            p for t in targets or [] for p in load_pipelines(t, search_path=_search_path(proj))
        ]
        out = console()
        runner = runner_for(
            runner_name,
            proj,
            heartbeat_interval=min(5.0, stale / 2),
            stale_after=stale,
            listener=None if as_json else _Display(out).on_event,
        )
        recovered = runner.recover(pipelines)
        if as_json:
            echo_list(r.to_dict() for r in recovered)
            return
        if not recovered:
            out.print("no crashed runs")
            return
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="runs marked failed", title_justify="left")
        for column in ("run", "kind", "name", "attempt", "started", "error"):
            table.add_column(column, overflow="fold")
        for r in recovered:
            table.add_row(
                r.id,
                r.kind,
                escape(r.name),
                str(r.attempt),
                when(r.started_at),
                escape(_first_line(r.error)),
            )
        out.print(table)


@pipeline_app.command("schedule")
@errors
def schedule_command(
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help="Pipelines to schedule (TARGET...), besides the models' retraining and the "
            "feature store's materialization."
        ),
    ] = None,
    poll_interval: Annotated[
        str, typer.Option(help=f"How long between ticks: {DURATION_FORMS}.")
    ] = "5s",
    runner_name: RunnerOpt = "local",
    project: ProjectOpt = None,
) -> None:
    """Run the scheduler until Ctrl-C: cron schedules, data and event triggers, crash recovery.

    Every model whose ``retrain`` spec has a cron, on_new_data or on_events
    is scheduled too, as the pipeline ``retrain.NAME``; so is
    ``features.materialize.cron``, as the pipeline ``features.materialize``,
    ``monitoring.compaction.cron``, as the pipeline ``monitoring.compact``,
    ``monitoring.drift.cron``, as the pipeline ``monitoring.drift``, and
    ``monitoring.quality.concept_drift.cron``, as ``monitoring.concept_drift``, and each
    job of ``scoring.jobs``, as ``scoring.NAME``.
    """
    import signal

    from conveyor.features.schedule import materialization_schedules
    from conveyor.monitoring.drift_jobs import drift_schedules
    from conveyor.monitoring.quality_jobs import concept_drift_schedules
    from conveyor.monitoring.schedule import compaction_schedules
    from conveyor.pipelines.loading import load_pipelines
    from conveyor.pipelines.runners import runner_for
    from conveyor.pipelines.scheduler import Scheduler
    from conveyor.scoring.schedule import scoring_schedules
    from conveyor.training.continuous import retraining_schedules

    interval = parse_duration(poll_interval, "--poll-interval").total_seconds()
    with open_project(project) as proj:
        authorized(proj, "pipelines.run")
        pipelines = [
            p for t in targets or [] for p in load_pipelines(t, search_path=_search_path(proj))
        ]
        pipelines += retraining_schedules(proj)
        pipelines += materialization_schedules(proj)
        pipelines += compaction_schedules(proj)
        pipelines += drift_schedules(proj)
        pipelines += concept_drift_schedules(proj)
        pipelines += scoring_schedules(proj)
        if not pipelines:
            raise InvalidInputError(
                "nothing to schedule: name pipelines (TARGET...), give a model a retrain "
                "spec (cron, on_new_data or on_events) or the feature store a "
                "materialize.cron in conveyor.yaml",
                field="targets",
            )
        out = console()
        display = _Display(out)

        def tell(kind: str, payload: Mapping[str, Any]) -> None:
            display.on_event(kind, payload)
            if kind == "pipeline.finished":
                out.print(
                    f"{payload.get('pipeline')} run {payload.get('run_id')}: "
                    f"{_styled(str(payload.get('status')))} in {_secs(payload.get('duration_s'))}"
                )

        runner = runner_for(runner_name, proj, listener=tell)
        scheduler = Scheduler(runner, pipelines, poll_interval=interval)
        stop = threading.Event()
        # SIGTERM (a service manager stopping the scheduler) lets the running pipeline finish.
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        names = ", ".join(p.name for p in pipelines)
        out.print(f"scheduling {names} every {interval:g} s; Ctrl-C stops")
        try:
            scheduler.serve(stop)
        except KeyboardInterrupt:
            out.print("stopped")
        finally:
            signal.signal(signal.SIGTERM, previous)
