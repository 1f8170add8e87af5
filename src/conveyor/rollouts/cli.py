"""``conveyor rollout start|status|pause|resume|abort|promote|run``.

::

    conveyor rollout start fraud@4 --steps 1,5,25,50,100 --interval 10m
    conveyor rollout run                       # the controller: ticks until stopped
    conveyor rollout status fraud --json
    conveyor rollout pause fraud | resume fraud | abort fraud --reason "p99" | promote fraud
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import TYPE_CHECKING, Annotated

import typer

from conveyor.cli.common import JsonOpt, ProjectOpt, authorized, echo_json, errors, open_project
from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    from conveyor.project import Project
    from conveyor.rollouts.controller import Rollout, TickResult

__all__ = ["rollout_app"]

rollout_app = typer.Typer(
    help="Progressive delivery: move a candidate through traffic steps, judged at each step; "
    "rolled back on failure, promoted at 100 %."
)

RefArg = Annotated[str, typer.Argument(help="A rollout id, or a model (its newest rollout).")]


def _model_version(ref: str) -> tuple[str, int]:
    model, at, number = ref.partition("@")
    if not at or not model or not number.isdigit():
        raise InvalidInputError(f"expected MODEL@VERSION, got {ref!r}", field="ref")
    return model, int(number)


def _show(rollout: Rollout, as_json: bool) -> None:
    if as_json:
        echo_json(rollout.to_dict())
        return
    d = rollout.to_dict()
    typer.echo(
        f"rollout {d['id']}: {d['model']}@{d['candidate']} (stable {d['stable']}) {d['status']}; "
        f"step {d['step'] + 1}/{len(d['steps'])} {d['step_label']} ({' -> '.join(d['steps'])})"
        + (f"; extended {d['extensions']}x" if d["extensions"] else "")
    )
    if d["reason"]:
        typer.echo(f"  reason: {d['reason']}")
    if d["forced"]:
        typer.echo(f"  forced past its gates: {d['force_reason']}")
    if d["reports"]:
        typer.echo(f"  step reports: {', '.join(d['reports'])}")


@rollout_app.command("start")
@errors
def start_command(
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION: the candidate.")],
    steps: Annotated[
        str | None,
        typer.Option(help="Comma-separated: percentages, shadow, flag:NAME:key=value[:pct]."),
    ] = None,
    interval: Annotated[str | None, typer.Option(help="Per step: 30s, 10m, 1h...")] = None,
    min_requests: Annotated[
        int | None, typer.Option(help="Canary requests a step needs before it can pass.")
    ] = None,
    max_extensions: Annotated[
        int | None, typer.Option(help="Times a step is extended for too little traffic.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Start although the gates failed.")] = False,
    reason: Annotated[str | None, typer.Option(help="Why (required with --force).")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a rollout of MODEL@VERSION from the version the route serves now."""
    model, number = _model_version(ref)
    with open_project(project) as proj:
        who = authorized(proj, "rollouts.manage")
        started = proj.rollouts.start(
            model,
            number,
            actor=who,
            steps=steps,
            interval=interval,
            min_requests=min_requests,
            max_extensions=max_extensions,
            force=force,
            reason=reason,
        )
        _show(started, as_json)


@rollout_app.command("status")
@errors
def status_command(
    ref: Annotated[str | None, typer.Argument(help="A rollout id or model; none: all.")] = None,
    wait: Annotated[
        str | None,
        typer.Option(
            help="With REF: wait this long (30m, 2h) for the rollout to end; exit 0 when it "
            "was promoted, 3 when rolled back or aborted, 1 when still running (CI/CD)."
        ),
    ] = None,
    poll: Annotated[float, typer.Option(help="With --wait: seconds between reads.")] = 5.0,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A rollout's state (or every rollout's, newest first)."""
    with open_project(project) as proj:
        authorized(proj, "rollouts.read")
        if ref is not None and wait is not None:
            _wait(proj, ref, wait, poll, as_json)
            return
        if wait is not None:
            raise InvalidInputError("--wait needs a rollout id or a model", field="wait")
        if ref is not None:
            _show(proj.rollouts.get(ref), as_json)
            return
        found = proj.rollouts.list()
        if as_json:
            echo_json({"items": [r.to_dict() for r in found]})
            return
        for r in found:
            _show(r, False)
        if not found:
            typer.echo("no rollouts")


def _wait(proj: Project, ref: str, wait: str, poll: float, as_json: bool) -> None:
    """Read the rollout every ``poll`` s until it ends or ``wait`` runs out; exit by outcome."""
    import time

    from conveyor.cli.common import check_failed
    from conveyor.durations import parse_duration
    from conveyor.rollouts.controller import ACTIVE

    if poll <= 0:
        raise InvalidInputError("--poll must be positive", field="poll")
    deadline = time.monotonic() + parse_duration(wait, "--wait").total_seconds()
    while True:
        found = proj.rollouts.get(ref)
        if found.status not in ACTIVE or time.monotonic() >= deadline:
            break
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
    _show(found, as_json)
    if found.status in ACTIVE:
        typer.secho(f"still {found.status} after {wait}", err=True)
        raise typer.Exit(1)
    if found.status != "promoted":
        check_failed()


def _steer(name: str, help_text: str) -> None:
    @rollout_app.command(name, help=help_text)
    @errors
    def command(
        ref: RefArg,
        reason: Annotated[str | None, typer.Option(help="Why (recorded).")] = None,
        project: ProjectOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        with open_project(project) as proj:
            who = authorized(proj, "rollouts.manage")
            rollouts = proj.rollouts
            if name == "pause":
                done = rollouts.pause(ref, actor=who, reason=reason)
            elif name == "resume":
                done = rollouts.resume(ref, actor=who)
            elif name == "abort":
                done = rollouts.abort(ref, actor=who, reason=reason)
            else:
                done = rollouts.promote(ref, actor=who)
            _show(done, as_json)


_steer("pause", "Hold a rollout at its step (the route stays as it is).")
_steer("resume", "Resume a paused rollout: its step starts again from the live route.")
_steer("abort", "Stop a rollout: every request goes to the stable version again.")
_steer("promote", "Skip the remaining steps: the candidate takes 100 % and is promoted.")


@rollout_app.command("run")
@errors
def run_command(
    rollout: Annotated[str | None, typer.Option(help="Only this rollout (id or model).")] = None,
    poll: Annotated[float, typer.Option(help="Seconds between ticks.")] = 1.0,
    lease: Annotated[float, typer.Option(help="Lease length, seconds (renewed each tick).")] = 15.0,
    until_done: Annotated[bool, typer.Option(help="Return when no rollout is active.")] = False,
    once: Annotated[bool, typer.Option(help="One tick, then return.")] = False,
    holder: Annotated[str | None, typer.Option(help="This controller's name.")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The controller: tick every --poll seconds, moving and judging active rollouts.
    Safe to run twice: a lease in the store lets one controller drive each rollout."""
    name = holder or f"{socket.gethostname()}:{os.getpid()}"
    with open_project(project) as proj:
        authorized(proj, "rollouts.manage")

        def tell(result: TickResult) -> None:
            if as_json:
                echo_json(result.to_dict())
            else:
                typer.echo(
                    f"{result.model} [{result.rollout_id[:8]}] step {result.step + 1}: "
                    f"{result.action}" + (f" ({result.detail})" if result.detail else ""),
                )

        if once:
            results = proj.rollouts.tick(name, rollout=rollout, lease_s=lease)
            if as_json:
                echo_json({"items": [r.to_dict() for r in results]})
                return
            for result in results:
                tell(result)
            return
        with contextlib.suppress(KeyboardInterrupt):
            proj.rollouts.run(
                name,
                rollout=rollout,
                poll_s=poll,
                lease_s=lease,
                until_done=until_done,
                report=tell,
            )
