"""``Scheduler``: starts pipelines on their cron schedule and when their triggers fire.

::

    scheduler = Scheduler(runner, [daily, on_arrival])
    scheduler.serve(stop_event)          # or scheduler.tick() from your own loop

State lives in the ``schedules`` table, one row per pipeline: the last
slot fired, the next slot due, and each trigger's state. That makes it
safe to restart (a slot is neither skipped nor repeated) and to run
several schedulers at once: a tick first *plans* from what it read
(:meth:`Scheduler.due`, read-only), then *claims* each firing by writing
the row at the version it read (:meth:`Scheduler.fire`). Of two
schedulers that planned the same firing, one write wins; the other gets
ConcurrentUpdateError (AlreadyExistsError for a row both tried to create)
and skips it. The claim is committed before the pipeline runs, so a slot
fires at most once; a run whose process dies is then the business of the
runner's ``recover`` (which :meth:`serve` calls every loop).

Cron slots (UTC)
    On first sight of a pipeline's schedule (or of a changed expression)
    the next slot at or after now is stored (due at once if it is now).
    When a tick finds that slot past, ``catch_up="latest"`` runs the most
    recent past slot once, however many were missed; ``"none"`` runs it only
    if it is at most ``grace`` old (a tick a few seconds late is not
    downtime), else skips to the next slot.
    Either way one run at most per pipeline per tick.

Triggers
    Each trigger is polled with its stored state (and the runner's event
    log); a firing starts one run whose ``params["triggers"]`` lists the
    reasons (a cron slot and a new dataset version in the same tick start
    one run with both). A firing marked ``run=False`` is claimed the same
    way but only stores the trigger's new state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.errors import (
    AlreadyExistsError,
    ConcurrentUpdateError,
    ConveyorError,
    InvalidInputError,
)
from conveyor.pipelines.definition import Pipeline
from conveyor.pipelines.errors import PipelineDefinitionError
from conveyor.pipelines.events import SCHEDULE_SKIPPED
from conveyor.pipelines.triggers import TriggerFiring
from conveyor.store.types import aware_utc, utcnow

if TYPE_CHECKING:
    from conveyor.pipelines.results import PipelineRun
    from conveyor.pipelines.runners import Runner

__all__ = ["Firing", "Scheduler"]

log = logging.getLogger("conveyor.pipelines.scheduler")
_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Firing:
    """What one tick wants to do for one pipeline, planned from the row at ``version``.

    ``version`` None means the row did not exist yet. ``run`` False means
    the row only moves on (first sight, or missed slots skipped).
    """

    pipeline: Pipeline
    version: int | None
    now: datetime
    run: bool
    slot: datetime | None = None
    next_fire_at: datetime | None = None
    skipped_slot: datetime | None = None
    triggers: dict[str, TriggerFiring] = field(default_factory=dict)

    @property
    def reasons(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.slot is not None:
            out.append({"kind": "schedule", "slot": self.slot.isoformat()})
        out.extend(f.reason for f in self.triggers.values() if f.run)
        return out


class Scheduler:
    """Fires ``pipelines`` through ``runner`` when their schedule or a trigger says so.

    ``runner`` is any :class:`~conveyor.pipelines.runners.Runner`: the local
    one, or one that runs steps elsewhere and records them in the same store.
    """

    def __init__(
        self,
        runner: Runner,
        pipelines: Iterable[Pipeline],
        *,
        poll_interval: float = 5.0,
        grace: timedelta = timedelta(minutes=1),
        recover: bool = True,
    ) -> None:
        self.runner = runner
        self.pipelines: dict[str, Pipeline] = {}
        for pipeline in pipelines:
            if not isinstance(pipeline, Pipeline):
                raise InvalidInputError(
                    f"Scheduler takes Pipelines, got {type(pipeline).__name__}", field="pipelines"
                )
            if pipeline.name in self.pipelines:
                raise PipelineDefinitionError(
                    f"two pipelines are named {pipeline.name!r}; a schedule is kept per name",
                    pipeline=pipeline.name,
                )
            if pipeline.schedule is None and not pipeline.triggers:
                raise PipelineDefinitionError(
                    f"pipeline {pipeline.name!r} has no schedule and no triggers: a scheduler "
                    "would never start it (run it with LocalRunner.run)",
                    pipeline=pipeline.name,
                    field="schedule",
                )
            pipeline.validate()
            self.pipelines[pipeline.name] = pipeline
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float):
            raise InvalidInputError(
                f"poll_interval must be seconds > 0, got {poll_interval!r}", field="poll_interval"
            )
        if not poll_interval > 0:
            raise InvalidInputError(
                f"poll_interval must be seconds > 0, got {poll_interval!r}", field="poll_interval"
            )
        if not isinstance(grace, timedelta) or grace < timedelta(0):
            raise InvalidInputError(f"grace must be a timedelta >= 0, got {grace!r}", field="grace")
        self.poll_interval = float(poll_interval)
        self.grace = grace
        self.recover = recover

    def __repr__(self) -> str:
        return f"<Scheduler pipelines={list(self.pipelines)}>"

    # -- one tick -----------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> list[PipelineRun]:
        """Fire what is due at ``now`` (default: the current time); the runs started."""
        started = []
        for firing in self.due(now):
            result = self.fire(firing)
            if result is not None:
                started.append(result)
        return started

    def due(self, now: datetime | None = None) -> list[Firing]:
        """Plan: what each pipeline should do at ``now``, from the stored state. Writes nothing."""
        from conveyor.pipelines.tables import ScheduleRecord

        now = utcnow() if now is None else aware_utc(now, "now")
        plans: list[Firing] = []
        for pipeline in self.pipelines.values():
            with self.runner.store.read() as session:
                record = session.get(ScheduleRecord, pipeline.name)
                if record is None:
                    version, next_at, state = None, None, {}
                else:
                    version, next_at, state = record.version, record.next_fire_at, record.state
            plan = self._plan(pipeline, now, version, next_at, state)
            if plan is not None:
                plans.append(plan)
        return plans

    def _plan(
        self,
        pipeline: Pipeline,
        now: datetime,
        version: int | None,
        next_at: datetime | None,
        state: Mapping[str, Any],
    ) -> Firing | None:
        slot = skipped = None
        stored = next_at
        if state.get("cron") != pipeline.schedule:
            next_at = None  # first sight of this schedule (new, or changed since)
        new_next = next_at
        if pipeline.schedule is not None:
            if next_at is None:
                next_at = _next_slot(pipeline.schedule, now - _ONE_US)
            new_next = next_at
            if next_at <= now:
                latest = _latest_slot(pipeline.schedule, now)
                if pipeline.catch_up == "latest" or now - latest <= self.grace:
                    slot = latest
                else:
                    skipped = latest
                new_next = _next_slot(pipeline.schedule, now)
        seen = state.get("triggers", {})
        fired = {}
        for trigger in pipeline.triggers:
            firing = trigger.poll(
                self.runner.store, seen.get(trigger.key, {}), events=self.runner.events
            )
            if firing is not None:
                fired[trigger.key] = firing
        # A firing with run=False only stores its trigger's state (a trigger arming itself).
        run = slot is not None or any(f.run for f in fired.values())
        changed = new_next != stored or state.get("cron") != pipeline.schedule
        if not run and version is not None and not changed and skipped is None and not fired:
            return None  # nothing due and nothing to store
        return Firing(
            pipeline=pipeline,
            version=version,
            now=now,
            run=run,
            slot=slot,
            next_fire_at=new_next,
            skipped_slot=skipped,
            triggers=fired,
        )

    def fire(self, firing: Firing) -> PipelineRun | None:
        """Claim ``firing`` (write the row at the version it was planned from), then run it.

        None if another scheduler claimed it first (it got there; this one
        skips) or if the firing only moves the schedule on.
        """
        name = firing.pipeline.name
        try:
            self._claim(firing)
        except (ConcurrentUpdateError, AlreadyExistsError) as exc:
            log.info("pipeline %r: another scheduler fired first (%s); skipping", name, exc)
            return None
        if firing.skipped_slot is not None:
            self.runner.emit(
                SCHEDULE_SKIPPED,
                name,
                None,
                {
                    "pipeline": name,
                    "slot": firing.skipped_slot.isoformat(),
                    "reason": f"missed by more than {self.grace} and catch_up is 'none'",
                },
            )
        if not firing.run:
            return None
        reasons = firing.reasons
        log.info("pipeline %r: firing (%s)", name, ", ".join(r["kind"] for r in reasons))
        return self.runner.run(firing.pipeline, {"triggers": reasons})

    def _claim(self, firing: Firing) -> None:
        from conveyor.pipelines.tables import ScheduleRecord

        name = firing.pipeline.name
        with self.runner.store.session() as session:
            record = session.get(ScheduleRecord, name)
            if firing.version is None:
                if record is not None:
                    raise ConcurrentUpdateError(
                        f"the schedule of {name!r} was created by someone else meanwhile",
                        pipeline=name,
                    )
                record = ScheduleRecord(name=name, last_fired_at=None, state={})
                session.add(record)
            elif record is None or record.version != firing.version:
                raise ConcurrentUpdateError(
                    f"the schedule of {name!r} changed since it was read (version "
                    f"{firing.version}, now {None if record is None else record.version})",
                    pipeline=name,
                    expected_version=firing.version,
                )
            if firing.slot is not None:
                record.last_fired_at = firing.slot
            record.next_fire_at = firing.next_fire_at
            triggers = dict(record.state.get("triggers", {}))
            for key, fired in firing.triggers.items():
                triggers[key] = fired.state
            # The expression next_fire_at was computed from: a changed one starts afresh.
            record.state = {**record.state, "cron": firing.pipeline.schedule, "triggers": triggers}
            record.updated_at = utcnow()
            session.flush()

    # -- the loop -------------------------------------------------------------------

    def serve(self, stop_event: threading.Event) -> None:
        """Tick every ``poll_interval`` seconds until ``stop_event`` is set.

        Each loop first recovers crashed runs (``recover=True``), so runs a
        dead scheduler left behind are failed or re-run. A store error is
        logged and retried on the next loop; a pipeline's failure is
        recorded in its run, not raised here.
        """
        log.info("scheduler serving %s every %g s", list(self.pipelines), self.poll_interval)
        while not stop_event.is_set():
            try:
                if self.recover:
                    self.runner.recover(self.pipelines.values())
                self.tick()
            except ConveyorError as exc:
                log.warning("scheduler tick failed, retrying in %g s: %s", self.poll_interval, exc)
            stop_event.wait(self.poll_interval)


def _next_slot(expression: str, after: datetime) -> datetime:
    """The first slot strictly after ``after``."""
    from croniter import croniter  # type: ignore[import-untyped,unused-ignore]

    nxt: datetime = croniter(expression, after).get_next(datetime)
    return aware_utc(nxt, "slot")


def _latest_slot(expression: str, now: datetime) -> datetime:
    """The last slot at or before ``now``."""
    from croniter import croniter  # type: ignore[import-untyped,unused-ignore]

    prev: datetime = croniter(expression, now + _ONE_US).get_prev(datetime)
    return aware_utc(prev, "slot")
