"""The rollout controller: a state machine in the store, moved one :meth:`tick` at a time.

::

    rollouts = project.rollouts
    r = rollouts.start("fraud", 4, actor="ana")             # stable: the route's version
    rollouts.tick(holder="ctl-1")                           # moves / judges every rollout
    rollouts.get(r.id).status                               # running, paused, promoted...

A rollout is ``running`` or ``paused`` (active; one per model) until it ends
``promoted``, ``rolled_back`` or ``aborted``. Each tick, for each active rollout whose
lease it holds or can take (``lease_holder`` until ``lease_expires``, renewed each
tick, so two controllers never drive one rollout):

1. a step not yet applied moves the route (:class:`RouteStore.set` with the revision
   the controller last wrote: a manual change since pauses the rollout, naming it);
2. once the step's interval has passed, the step's traffic is read from the monitoring
   query layer and judged (:func:`conveyor.rollouts.analysis.analyze`); the report is
   saved (``conveyor.checks.persist``);
3. ``pass``: the next step, or at 100 % the alias is promoted through the registry's
   gates record; ``wait`` (too little traffic): one more interval, at most
   ``max_extensions`` times, then a rollback naming the missing traffic; ``fail``: the
   route goes back to the stable version at 100 %, an event and an alert say why.

Every decision is in the row, so a controller that dies mid-step leaves the rollout
where it was: the next one to take the lease resumes at the same step and window.
"""

from __future__ import annotations

import builtins
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.errors import (
    ConcurrentUpdateError,
    ConflictError,
    GateFailedError,
    InvalidInputError,
    NotFoundError,
)
from conveyor.rollouts import events as ev
from conveyor.rollouts.settings import RolloutDefaults, Step, interval_of, parse_steps, plan_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from conveyor.capability import EventKind
    from conveyor.checks.result import Report
    from conveyor.project import Project
    from conveyor.rollouts.analysis import ArmSample, Judgement
    from conveyor.rollouts.tables import RolloutRecord
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

__all__ = ["ACTIVE", "Rollout", "Rollouts", "TickResult"]

ACTIVE = ("running", "paused")
DEFAULT_LEASE_S = 15.0
REPORT_KIND = "rollout-step"


@dataclass(frozen=True, slots=True)
class Rollout:
    """A rollout as stored (a snapshot of its row)."""

    id: str
    model: str
    candidate: int
    stable: int
    status: str
    step_index: int
    step_started_at: datetime | None
    extensions: int
    route_revision: int | None
    plan: dict[str, Any]
    doc: dict[str, Any]
    reason: str | None
    actor: str | None
    lease_holder: str | None
    lease_expires: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def steps(self) -> list[Step]:
        return parse_steps(self.plan["steps"])

    @property
    def step(self) -> Step:
        return self.steps[self.step_index]

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        steps = self.steps
        return {
            "id": self.id,
            "model": self.model,
            "candidate": self.candidate,
            "stable": self.stable,
            "status": self.status,
            "step": self.step_index,
            "step_label": steps[self.step_index].label(),
            "steps": [s.label() for s in steps],
            "step_started_at": _iso(self.step_started_at),
            "extensions": self.extensions,
            "route_revision": self.route_revision,
            "plan": self.plan,
            "reports": self.doc.get("reports", []),
            "history": self.doc.get("history", []),
            "forced": self.doc.get("forced", False),
            "force_reason": self.doc.get("force_reason"),
            "reason": self.reason,
            "actor": self.actor,
            "lease_holder": self.lease_holder,
            "lease_expires": _iso(self.lease_expires),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one tick did to one rollout: ``action`` is ``applied``, ``waiting``,
    ``extended``, ``passed``, ``promoted``, ``rolled_back``, ``paused``, ``held`` (another
    controller holds the lease) or ``conflict`` (the route was changed by hand)."""

    rollout_id: str
    model: str
    action: str
    step: int
    detail: str = ""
    report_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "model": self.model,
            "action": self.action,
            "step": self.step,
            "detail": self.detail,
            "report_id": self.report_id,
        }


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _now() -> datetime:
    return datetime.now(UTC)


def _view(row: RolloutRecord) -> Rollout:
    return Rollout(
        row.id,
        row.model,
        row.candidate,
        row.stable,
        row.status,
        row.step_index,
        row.step_started_at,
        row.extensions,
        row.route_revision,
        dict(row.plan),
        dict(row.doc),
        row.reason,
        row.actor,
        row.lease_holder,
        row.lease_expires,
        row.created_at,
        row.updated_at,
    )


class Rollouts:
    """Start, inspect, steer and drive rollouts (``project.rollouts``)."""

    def __init__(self, project: Project, *, clock: Callable[[], datetime] = _now) -> None:
        self.project = project
        self.clock = clock

    @classmethod
    def for_project(cls, project: Project) -> Rollouts:
        return cls(project)

    @property
    def routes(self) -> RouteStore:
        from conveyor.serving.route_store import RouteStore

        return RouteStore(self.project.store, self.project.events, self.project.registry)

    # -- starting ------------------------------------------------------------------

    def start(
        self,
        model: str,
        candidate: int,
        *,
        actor: str | None,
        steps: Any = None,
        interval: str | None = None,
        min_requests: int | None = None,
        max_extensions: int | None = None,
        force: bool = False,
        reason: str | None = None,
    ) -> Rollout:
        """Start rolling ``model@candidate`` out from the version its route serves.

        Refused: a candidate whose gates failed (or never ran), unless ``force`` with a
        ``reason`` (recorded); a second active rollout of the model (named); a route that
        does not serve exactly one version.
        """
        import sqlalchemy as sa

        from conveyor.rollouts.tables import RolloutRecord

        if (
            isinstance(candidate, bool)
            or not isinstance(candidate, int)
            or not (1 <= candidate < 2**31)
        ):
            raise InvalidInputError(
                f"version: a version number, got {candidate!r}", field="version"
            )
        if force and not (reason and reason.strip()):
            raise InvalidInputError("--force needs a --reason (it is recorded)", field="reason")
        analysis = {"min_requests": min_requests} if min_requests is not None else None
        plan = plan_for(
            self.project.spec,
            model,
            steps=steps.split(",") if isinstance(steps, str) else steps,
            interval=interval,
            max_extensions=max_extensions,
            analysis=analysis,
        )
        parsed = parse_steps(plan.steps)
        registry = self.project.registry
        found = registry.get(model, candidate)  # NotFoundError: no such version
        route = self.routes.get(model)
        serving = route.policy.serving_versions()
        if route.policy.mode != "fixed" or len(serving) != 1:
            raise ConflictError(
                f"the route of {model!r} serves {list(serving)} ({route.policy.mode}); a rollout "
                "starts from a route fixed on one stable version",
                model=model,
            )
        stable = serving[0]
        if stable == found.number:
            raise InvalidInputError(
                f"{model}@{candidate} is already the stable version the route serves",
                field="version",
            )
        if not force:
            self._check_gates(model, found.number)
        with self.project.store.session() as s:
            active = s.scalars(
                sa.select(RolloutRecord).where(
                    RolloutRecord.model == model, RolloutRecord.status.in_(ACTIVE)
                )
            ).first()
            if active is not None:
                raise ConflictError(
                    f"{model!r} already has an active rollout: {active.id} "
                    f"({model}@{active.candidate}, {active.status}); abort or finish it first",
                    model=model,
                    active=active.id,
                )
            now = self.clock()
            row = RolloutRecord(
                id=uuid.uuid4().hex,
                model=model,
                candidate=found.number,
                stable=stable,
                status="running",
                step_index=0,
                step_started_at=None,
                extensions=0,
                route_revision=route.revision,
                plan=plan.model_dump(mode="json"),
                doc={
                    "reports": [],
                    "history": [],
                    "forced": force,
                    "force_reason": reason if force else None,
                },
                reason=None,
                actor=actor,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
        view = _view(row)
        self._emit(
            ev.ROLLOUT_STARTED,
            view,
            actor,
            steps=[st.label() for st in parsed],
            interval=plan.interval,
            forced=force,
            force_reason=reason if force else None,
        )
        return view

    def _check_gates(self, model: str, number: int) -> None:
        from conveyor.registry.promotion import latest_gate_report

        report = latest_gate_report(self.project.store, model, number)
        hint = "or start anyway with --force --reason (recorded)"
        if report is None:
            raise GateFailedError(
                f"{model}@{number} has no gate report: run its gates first "
                f"(conveyor models gates {model}@{number}), {hint}",
                model=model,
                version=number,
            )
        if not report.passed:
            failed = ", ".join(c.name for c in report.failures)
            raise GateFailedError(
                f"{model}@{number} failed its gates (report {report.id}: {failed}), {hint}",
                model=model,
                version=number,
                failed=[c.name for c in report.failures],
            )

    # -- reading -------------------------------------------------------------------

    def get(self, ref: str) -> Rollout:
        """A rollout by id, or a model's newest rollout by model name."""
        import sqlalchemy as sa

        from conveyor.rollouts.tables import RolloutRecord

        with self.project.store.read() as s:
            row = s.get(RolloutRecord, ref)
            if row is None:
                row = s.scalars(
                    sa.select(RolloutRecord)
                    .where(RolloutRecord.model == ref)
                    .order_by(RolloutRecord.created_at.desc())
                ).first()
            if row is None:
                raise NotFoundError(f"no rollout {ref!r} (neither an id nor a model's)", ref=ref)
            return _view(row)

    def list(self, *, active: bool = False, model: str | None = None) -> list[Rollout]:
        import sqlalchemy as sa

        from conveyor.rollouts.tables import RolloutRecord

        query = sa.select(RolloutRecord).order_by(RolloutRecord.created_at.desc())
        if active:
            query = query.where(RolloutRecord.status.in_(ACTIVE))
        if model is not None:
            query = query.where(RolloutRecord.model == model)
        with self.project.store.read() as s:
            return [_view(r) for r in s.scalars(query.limit(200))]

    # -- steering ------------------------------------------------------------------

    def pause(self, ref: str, *, actor: str | None, reason: str | None = None) -> Rollout:
        found = self._transition(ref, ("running",), "paused", reason or "paused by hand")
        self._emit(ev.ROLLOUT_PAUSED, found, actor)
        return found

    def resume(self, ref: str, *, actor: str | None) -> Rollout:
        """Resume a paused rollout: its step is applied again from the live route's
        revision (so a manual change that paused it is taken as the new base)."""
        live = self.routes.get(self.get(ref).model).revision

        def change(row: RolloutRecord) -> None:
            row.route_revision = live
            row.step_started_at = None
            row.extensions = 0

        found = self._transition(ref, ("paused",), "running", None, change)
        self._emit(ev.ROLLOUT_RESUMED, found, actor)
        return found

    def abort(self, ref: str, *, actor: str | None, reason: str | None = None) -> Rollout:
        """Stop a rollout and route every request to the stable version again."""
        current = self.get(ref)
        self._require(current, ACTIVE)
        self._to_stable(current, actor, f"rollout {current.id} aborted: {reason or 'by hand'}")
        found = self._transition(ref, ACTIVE, "aborted", reason or "aborted by hand")
        self._emit(ev.ROLLOUT_ABORTED, found, actor, reason=reason)
        return found

    def promote(self, ref: str, *, actor: str | None) -> Rollout:
        """Skip the remaining steps: the candidate takes 100 % and its alias is promoted."""
        current = self.get(ref)
        self._require(current, ACTIVE)
        from conveyor.serving.routes import RoutePolicy

        state = self.routes.set(
            current.model,
            RoutePolicy.fixed(current.candidate),
            actor=actor,
            reason=f"rollout {current.id} promoted by hand",
        )
        last = len(current.steps) - 1

        def change(row: RolloutRecord) -> None:
            row.step_index = last
            row.route_revision = state.revision

        self._transition(ref, ACTIVE, "running", None, change)
        return self._promote(self.get(ref), actor, by_hand=True)

    def _require(self, rollout: Rollout, states: tuple[str, ...]) -> None:
        if rollout.status not in states:
            raise ConflictError(
                f"rollout {rollout.id} of {rollout.model!r} is {rollout.status}, not "
                + " or ".join(states),
                rollout=rollout.id,
                status=rollout.status,
            )

    def _transition(
        self,
        ref: str,
        sources: tuple[str, ...],
        target: str,
        reason: str | None,
        change: Callable[[RolloutRecord], None] | None = None,
    ) -> Rollout:
        from conveyor.rollouts.tables import RolloutRecord

        rollout_id = self.get(ref).id
        with self.project.store.session() as s:
            row = s.get(RolloutRecord, rollout_id, with_for_update=True)
            assert row is not None
            self._require(_view(row), sources)
            row.status = target
            row.reason = reason
            if change is not None:
                change(row)
            if target not in ACTIVE:
                row.lease_holder = None
                row.lease_expires = None
            row.updated_at = self.clock()
            self._log(row, target, reason)
            return _view(row)

    def _log(self, row: RolloutRecord, what: str, detail: str | None) -> None:
        history = list(row.doc.get("history", []))
        at = self.clock().isoformat()
        history.append({"at": at, "step": row.step_index, "what": what, "detail": detail})
        row.doc = {**row.doc, "history": history[-200:]}

    # -- driving -------------------------------------------------------------------

    def tick(
        self, holder: str, *, rollout: str | None = None, lease_s: float = DEFAULT_LEASE_S
    ) -> builtins.list[TickResult]:
        """One step of the controller for every active rollout (or one): see the module."""
        targets = [self.get(rollout)] if rollout else self.list(active=True)
        return [self._tick_one(r.id, holder, lease_s) for r in targets if r.active]

    def run(
        self,
        holder: str,
        *,
        rollout: str | None = None,
        poll_s: float = 1.0,
        lease_s: float = DEFAULT_LEASE_S,
        until_done: bool = False,
        report: Callable[[TickResult], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Tick every ``poll_s`` seconds; with ``until_done``, return once no rollout (or
        ``rollout``) is active."""
        while not (stop and stop()):
            for result in self.tick(holder, rollout=rollout, lease_s=lease_s):
                if report is not None and result.action != "waiting":
                    report(result)
            if until_done:
                left = [self.get(rollout)] if rollout else self.list(active=True)
                if not any(r.active for r in left):
                    return
            time.sleep(poll_s)

    def take_lease(self, rollout_id: str, holder: str, lease_s: float) -> bool:
        """Hold (or renew) the rollout's lease: a compare-and-set, one holder wins."""
        import sqlalchemy as sa

        from conveyor.rollouts.tables import RolloutRecord as R

        now = self.clock()
        with self.project.store.session() as s:
            result: Any = s.execute(
                sa.update(R)
                .where(
                    R.id == rollout_id,
                    R.status.in_(ACTIVE),
                    sa.or_(
                        R.lease_holder.is_(None), R.lease_holder == holder, R.lease_expires < now
                    ),
                )
                .values(lease_holder=holder, lease_expires=now + timedelta(seconds=lease_s))
            )
            return bool(result.rowcount)

    def _tick_one(self, rollout_id: str, holder: str, lease_s: float) -> TickResult:
        if not self.take_lease(rollout_id, holder, lease_s):
            current = self.get(rollout_id)
            return TickResult(
                rollout_id,
                current.model,
                "held",
                current.step_index,
                f"lease held by {current.lease_holder} until {_iso(current.lease_expires)}",
            )
        current = self.get(rollout_id)
        if current.status == "paused":
            return TickResult(rollout_id, current.model, "paused", current.step_index)
        if current.step_started_at is None:
            return self._apply(current, holder)
        live = self.routes.get(current.model).revision
        if live != current.route_revision:
            return self._conflict(current, live)
        plan = RolloutDefaults(**current.plan)
        now = self.clock()
        due = current.step_started_at + interval_of(plan) * (1 + current.extensions)
        if now < due:
            return TickResult(
                rollout_id, current.model, "waiting", current.step_index, f"judged at {_iso(due)}"
            )
        return self._judge(current, plan, now, holder)

    def _policy(self, rollout: Rollout, step: Step) -> RoutePolicy:
        from conveyor.serving.routes import FlagRule, RoutePolicy

        flags = [
            FlagRule(
                name=s.flag or "flag", match=s.match, percent=s.percent, version=rollout.candidate
            )
            for s in rollout.steps[: rollout.step_index + 1]
            if s.kind == "flag"
        ]
        if step.kind == "shadow":
            return RoutePolicy.fixed(rollout.stable, shadow=[rollout.candidate])
        if step.kind == "flag" or step.percent <= 0:
            return RoutePolicy.fixed(rollout.stable, flags=flags)
        if step.percent >= 100:
            return RoutePolicy.fixed(rollout.candidate)
        return RoutePolicy.canary(rollout.stable, rollout.candidate, step.percent, flags=flags)

    def _conflict(self, rollout: Rollout, live: Any) -> TickResult:
        """Someone changed the route since the controller wrote it: pause, never overwrite."""
        detail = (
            f"the route of {rollout.model!r} was changed by someone else (revision {live}, "
            f"the controller wrote {rollout.route_revision}): paused; resume to continue "
            "from the live route"
        )
        self._transition(rollout.id, ("running",), "paused", detail)
        return TickResult(rollout.id, rollout.model, "conflict", rollout.step_index, detail)

    def _apply(self, rollout: Rollout, holder: str) -> TickResult:
        from conveyor.rollouts.tables import RolloutRecord

        step = rollout.step
        try:
            state = self.routes.set(
                rollout.model,
                self._policy(rollout, step),
                actor=f"rollout:{rollout.id}",
                reason=f"rollout {rollout.id}: step {rollout.step_index + 1} ({step.label()})",
                expected_revision=rollout.route_revision,
            )
        except ConcurrentUpdateError as exc:
            return self._conflict(rollout, exc.context.get("revision"))
        now = self.clock()
        with self.project.store.session() as s:
            row = s.get(RolloutRecord, rollout.id)
            assert row is not None
            row.route_revision = state.revision
            row.step_started_at = now
            row.extensions = 0
            row.updated_at = now
            self._log(row, "step_started", step.label())
        self._emit(ev.ROLLOUT_STEP_STARTED, rollout, holder, route_revision=state.revision)
        return TickResult(rollout.id, rollout.model, "applied", rollout.step_index, step.label())

    def analyze_step(self, rollout: Rollout, since: datetime, until: datetime) -> Judgement:
        """Read the step's traffic over ``[since, until)`` and judge it."""
        from conveyor.rollouts.analysis import SLOLimits, analyze
        from conveyor.rollouts.sampling import read_arms, read_shadow

        plan = RolloutDefaults(**rollout.plan)
        step = rollout.step
        reader = read_shadow if step.kind == "shadow" else read_arms
        canary, stable = reader(
            self.project,
            rollout.model,
            stable=rollout.stable,
            candidate=rollout.candidate,
            since=since,
            until=until,
        )
        if step.kind != "shadow":
            canary, stable = self._with_quality(rollout, canary, stable, since, until)
        slos = self.project.spec.slos
        slo = SLOLimits(
            p95_ms=slos.latency_p95_ms,
            error_rate=None if slos.availability is None else 1 - slos.availability,
        )
        judgement = analyze(
            canary,
            None if step.kind == "percent" and step.percent >= 100 else stable,
            plan.analysis,
            slo=slo,
            subject=f"rollout:{rollout.model}",
            shadow=step.kind == "shadow",
        )
        judgement.report.subject_version = str(rollout.candidate)
        return judgement

    def _with_quality(
        self,
        rollout: Rollout,
        canary: ArmSample,
        stable: ArmSample,
        since: datetime,
        until: datetime,
    ) -> tuple[ArmSample, ArmSample]:
        """The arms with their quality and business value from feedback, where labels exist
        (``analysis.quality_metric``, else monitoring's metric for the model)."""
        from dataclasses import replace

        from conveyor.rollouts.sampling import read_quality

        plan = RolloutDefaults(**rollout.plan)
        try:
            found = read_quality(
                self.project,
                rollout.model,
                versions=(rollout.candidate, rollout.stable),
                since=since,
                until=until,
                metric=plan.analysis.quality_metric,
            )
        except NotFoundError:  # no feedback folder or copy yet: nothing to score
            return canary, stable

        def filled(arm: ArmSample, version: int) -> ArmSample:
            name, quality, business = found[version]
            return replace(arm, quality=quality, business=business, quality_metric=name)

        return filled(canary, rollout.candidate), filled(stable, rollout.stable)

    def _judge(
        self, rollout: Rollout, plan: RolloutDefaults, now: datetime, holder: str
    ) -> TickResult:
        from conveyor.checks.persist import save_report
        from conveyor.rollouts.tables import RolloutRecord

        assert rollout.step_started_at is not None
        judgement = self.analyze_step(rollout, rollout.step_started_at, now)
        if judgement.outcome == "wait":
            if rollout.extensions >= plan.max_extensions:
                reason = (
                    f"traffic never came: {judgement.reason} after "
                    f"{rollout.extensions + 1} intervals of {plan.interval}"
                )
                report_id = save_report(self.project.store, judgement.report)
                return self._roll_back(rollout, holder, reason, report_id, ["min_requests"])
            with self.project.store.session() as s:
                row = s.get(RolloutRecord, rollout.id)
                assert row is not None
                row.extensions += 1
                row.updated_at = now
                self._log(row, "extended", judgement.reason)
            canary = judgement.report.checks[0].observed
            self._emit(
                ev.ROLLOUT_EXTENDED,
                rollout,
                holder,
                extensions=rollout.extensions + 1,
                requests=int(canary),
            )
            return TickResult(
                rollout.id, rollout.model, "extended", rollout.step_index, judgement.reason
            )
        report_id = save_report(self.project.store, judgement.report)
        if judgement.outcome == "fail":
            failed = [c.name for c in judgement.report.failures if c.severity == "error"]
            return self._roll_back(rollout, holder, judgement.reason, report_id, failed)
        self._emit(ev.ROLLOUT_STEP_PASSED, rollout, holder, report_id=report_id)
        last = rollout.step_index == len(rollout.steps) - 1
        with self.project.store.session() as s:
            row = s.get(RolloutRecord, rollout.id)
            assert row is not None
            row.doc = {**row.doc, "reports": [*row.doc.get("reports", []), report_id]}
            self._log(row, "step_passed", report_id)
            if not last:
                row.step_index += 1
                row.step_started_at = None
                row.extensions = 0
            row.updated_at = now
        if last:
            promoted = self._promote(self.get(rollout.id), holder, by_hand=False)
            return TickResult(
                rollout.id, rollout.model, "promoted", rollout.step_index, promoted.reason or ""
            )
        applied = self._apply(self.get(rollout.id), holder)
        return TickResult(
            rollout.id,
            rollout.model,
            "passed",
            rollout.step_index,
            f"next: {applied.detail}",
            report_id,
        )

    def _promote(self, rollout: Rollout, actor: str | None, *, by_hand: bool) -> Rollout:
        plan = RolloutDefaults(**rollout.plan)
        forced = bool(rollout.doc.get("forced"))
        try:
            self.project.registry.promote(
                rollout.model,
                rollout.candidate,
                alias=plan.alias,
                actor=actor,
                reason=f"rollout {rollout.id} reached 100 %"
                + (f" (forced: {rollout.doc.get('force_reason')})" if forced else ""),
                force=forced,
            )
        except GateFailedError as exc:
            reason = f"at 100 % but {plan.alias!r} was not promoted: {exc}"
            paused = self._transition(rollout.id, ACTIVE, "paused", reason)
            return paused
        reason = "promoted by hand" if by_hand else "every step passed"
        done = self._transition(rollout.id, ACTIVE, "promoted", reason)
        self._emit(ev.ROLLOUT_PROMOTED, done, actor, alias=plan.alias, forced=forced)
        return done

    def _to_stable(self, rollout: Rollout, actor: str | None, reason: str) -> None:
        from conveyor.serving.routes import RoutePolicy

        # Never conditional: stopping harm wins over a concurrent edit.
        self.routes.set(
            rollout.model, RoutePolicy.fixed(rollout.stable), actor=actor, reason=reason
        )

    def _roll_back(
        self,
        rollout: Rollout,
        holder: str,
        reason: str,
        report_id: str | None,
        failed: builtins.list[str],
    ) -> TickResult:

        self._to_stable(
            rollout, f"rollout:{rollout.id}", f"rollout {rollout.id} rolled back: {reason}"
        )

        def change(row: RolloutRecord) -> None:
            if report_id is not None:
                row.doc = {**row.doc, "reports": [*row.doc.get("reports", []), report_id]}

        done = self._transition(rollout.id, ACTIVE, "rolled_back", reason, change)
        self._emit(
            ev.ROLLOUT_ROLLED_BACK, done, holder, report_id=report_id, reason=reason, failed=failed
        )
        self._alert(done, reason, report_id)
        return TickResult(
            rollout.id, rollout.model, "rolled_back", rollout.step_index, reason, report_id
        )

    def _alert(self, rollout: Rollout, reason: str, report_id: str | None) -> None:
        """Notify the alert sinks that a rollout was rolled back (best effort)."""
        from conveyor.rollouts.alerting import notify_rolled_back

        notify_rolled_back(self.project, rollout, reason, report_id)

    def _emit(self, kind: EventKind, rollout: Rollout, actor: str | None, **extra: Any) -> None:
        steps = rollout.steps
        self.project.events.record(
            kind,
            subject=rollout.model,
            subject_version=str(rollout.candidate),
            actor=actor,
            payload={
                "rollout_id": rollout.id,
                "candidate": rollout.candidate,
                "stable": rollout.stable,
                "step": rollout.step_index,
                "label": steps[min(rollout.step_index, len(steps) - 1)].label(),
                **extra,
            },
        )


def report_of(project: Project, report_id: str) -> Report:
    from conveyor.checks.persist import get_report

    return get_report(project.store, report_id)
