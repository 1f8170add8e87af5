"""Experiments as data in the store: start, report, stop (``project.experiments``).

::

    exps = project.experiments
    exps.start("checkout-v4", "fraud", {"control": 3, "treatment": 4},
               primary="conversion", baseline=0.10, mde=0.02,
               guardrails=["error_rate", "p95_latency"], actor="ana")
    exps.report("checkout-v4")["recommendation"]      # "keep running", "ship"...
    exps.stop("checkout-v4", winner="treatment", actor="ana")

Starting an experiment checks every arm's version is registered (refused otherwise,
before anything is written), computes the planned sample size from the design, and
sets the model's route to an A-B split of the named arms with sticky assignment (one
:class:`~conveyor.serving.route_store.RouteStore` revision), or adopts the live route
when it already is that split. One running experiment per model.

A report reads the arms' traffic and feedback since the start
(:mod:`conveyor.experiments.data`), judges it (:func:`conveyor.experiments.analysis.
judge`), saves a :class:`~conveyor.checks.result.Report` of its checks
(:mod:`conveyor.checks.persist`) and records ``experiment.concluded`` the first time it
recommends ship or do not ship. Stopping routes every request to the winner (or the
control arm) and records ``experiment.stopped``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from conveyor.experiments import events as ev

if TYPE_CHECKING:
    from conveyor.experiments.tables import ExperimentRecord
    from conveyor.project import Project
    from conveyor.serving.route_store import RouteStore
    from conveyor.serving.routes import RoutePolicy

__all__ = ["DEFAULT_STICKY_HEADER", "Experiment", "Experiments", "parse_arms"]

DEFAULT_STICKY_HEADER = "x-user-id"
REPORT_KIND = "experiment"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


@dataclass(frozen=True, slots=True)
class Experiment:
    """An experiment as stored (a snapshot of its row)."""

    id: str
    name: str
    model: str
    status: str
    arms: list[dict[str, Any]]
    design: dict[str, Any]
    route_revision: int | None
    doc: dict[str, Any]
    actor: str | None
    started_at: datetime
    stopped_at: datetime | None

    @property
    def labels(self) -> list[str]:
        return [a["arm"] for a in self.arms]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "model": self.model,
            "status": self.status,
            "arms": self.arms,
            "design": self.design,
            "route_revision": self.route_revision,
            "actor": self.actor,
            "started_at": self.started_at.isoformat(),
            "stopped_at": None if self.stopped_at is None else self.stopped_at.isoformat(),
            "last_report": self.doc.get("last"),
            "reports": self.doc.get("reports", []),
            "winner": self.doc.get("winner"),
        }


def _view(row: ExperimentRecord) -> Experiment:
    return Experiment(
        row.id,
        row.name,
        row.model,
        row.status,
        list(row.arms),
        dict(row.design),
        row.route_revision,
        dict(row.doc),
        row.actor,
        row.started_at,
        row.stopped_at,
    )


def parse_arms(arms: Mapping[str, Any] | Sequence[str] | str) -> list[dict[str, Any]]:
    """Arms as ``[{"arm", "version", "weight"}]`` from a mapping (label -> version, or
    label -> {"version", "weight"}) or ``label=version[:weight]`` strings; the first arm
    is the control."""
    items: list[tuple[str, Any]]
    if isinstance(arms, str):
        arms = [a for a in arms.split(",") if a.strip()]
    if isinstance(arms, Mapping):
        items = [(str(k), v) for k, v in arms.items()]
    else:
        items = []
        for text in arms:
            label, eq, rest = str(text).strip().partition("=")
            if not eq:
                raise InvalidInputError(
                    f"an arm is LABEL=VERSION[:WEIGHT], got {text!r}", field="arms"
                )
            number_text, _, weight_text = rest.partition(":")
            items.append((label, {"version": number_text, "weight": weight_text or 50}))
    out: list[dict[str, Any]] = []
    for label, spec in items:
        if not _NAME.match(label):
            raise InvalidInputError(f"arm name {label!r} is not a valid name", field="arms")
        pair: tuple[Any, Any] = (
            (spec.get("version"), spec.get("weight", 50))
            if isinstance(spec, Mapping)
            else (spec, 50)
        )
        version, weight = pair
        try:
            number, share = int(version), float(weight)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"arm {label!r}: version is an integer and weight a number", field="arms"
            ) from None
        if number < 1 or not share > 0:
            raise InvalidInputError(f"arm {label!r}: version >= 1 and weight > 0", field="arms")
        out.append({"arm": label, "version": number, "weight": share})
    if len(out) != 2:
        raise InvalidInputError(
            f"an experiment compares two arms (control first, then treatment), got {len(out)}",
            field="arms",
        )
    if out[0]["arm"] == out[1]["arm"]:
        raise InvalidInputError("the two arms need different names", field="arms")
    return out


class Experiments:
    """Start, report and stop A-B experiments (``project.experiments``)."""

    def __init__(self, project: Project) -> None:
        self.project = project

    @classmethod
    def for_project(cls, project: Project) -> Experiments:
        return cls(project)

    @property
    def routes(self) -> RouteStore:
        from conveyor.serving.route_store import RouteStore

        return RouteStore(self.project.store, self.project.events, self.project.registry)

    # -- starting ------------------------------------------------------------------

    def design(
        self,
        primary: str,
        *,
        mde: float,
        relative: bool = False,
        baseline: float | None = None,
        sd: float | None = None,
        alpha: float | None = None,
        power: float | None = None,
        guardrails: Sequence[str] = (),
    ) -> dict[str, Any]:
        """The design (metrics, MDE, alpha, power) and its planned sample size per arm."""
        from conveyor.experiments.analysis import split_alpha
        from conveyor.experiments.data import MetricSpec
        from conveyor.experiments.settings import experiments_of
        from conveyor.experiments.stats import sample_size_means, sample_size_proportions

        defaults = experiments_of(self.project.spec)
        alpha = defaults.alpha if alpha is None else alpha
        power = defaults.power if power is None else power
        metric = MetricSpec.parse(primary, primary=True)
        guards = [MetricSpec.parse(g) for g in guardrails]
        if metric.name in {g.name for g in guards}:
            raise InvalidInputError(
                f"{metric.name} is the primary metric; a guardrail is another metric",
                field="guardrails",
            )
        _, alpha_fixed = split_alpha(alpha, defaults.sequential_share)
        if metric.kind == "proportion":
            if baseline is None:
                raise InvalidInputError(
                    f"{metric.name} is a rate: give its baseline (e.g. 0.10)", field="baseline"
                )
            n = sample_size_proportions(
                baseline, mde, relative=relative, alpha=alpha_fixed, power=power
            )
        else:
            if sd is None:
                raise InvalidInputError(
                    f"{metric.name} is a mean: give its standard deviation (--sd)", field="sd"
                )
            n = sample_size_means(
                sd, mde, baseline=baseline, relative=relative, alpha=alpha_fixed, power=power
            )
        absolute = abs(mde * baseline if relative and baseline is not None else mde)
        return {
            "primary": metric.name,
            "kind": metric.kind,
            "higher_is_better": metric.higher_is_better,
            "guardrails": [{"name": g.name, "tau": g.tau} for g in guards],
            "mde": mde,
            "relative": relative,
            "mde_absolute": absolute,
            "baseline": baseline,
            "sd": sd,
            "alpha": alpha,
            "power": power,
            "sequential_share": defaults.sequential_share,
            "planned_n": n,
            "tau": absolute,
        }

    def start(
        self,
        name: str,
        model: str,
        arms: Mapping[str, Any] | Sequence[str] | str,
        *,
        primary: str,
        mde: float,
        actor: str | None,
        relative: bool = False,
        baseline: float | None = None,
        sd: float | None = None,
        alpha: float | None = None,
        power: float | None = None,
        guardrails: Sequence[str] = (),
        sticky_header: str | None = None,
    ) -> Experiment:
        """Start an experiment (see the module). Refused: an arm on a missing version
        (NotFoundError naming it), a name taken, a running experiment on the model."""
        import sqlalchemy as sa

        from conveyor.experiments.tables import ExperimentRecord
        from conveyor.serving.routes import Arm, RoutePolicy

        if not _NAME.match(name or ""):
            raise InvalidInputError(f"experiment name {name!r} is not a valid name", field="name")
        parsed = parse_arms(arms)
        registry = self.project.registry
        for arm in parsed:
            try:
                registry.get(model, arm["version"])
            except NotFoundError:
                raise NotFoundError(
                    f"experiment {name!r}: arm {arm['arm']!r} points at {model}@{arm['version']}, "
                    "which is not registered",
                    model=model,
                    version=arm["version"],
                    arm=arm["arm"],
                    field="arms",
                ) from None
        design = self.design(
            primary,
            mde=mde,
            relative=relative,
            baseline=baseline,
            sd=sd,
            alpha=alpha,
            power=power,
            guardrails=guardrails,
        )
        with self.project.store.read() as s:
            if s.scalars(
                sa.select(ExperimentRecord.id).where(ExperimentRecord.name == name)
            ).first():
                raise AlreadyExistsError(f"an experiment is already named {name!r}", name=name)
            running = s.scalars(
                sa.select(ExperimentRecord).where(
                    ExperimentRecord.model == model, ExperimentRecord.status == "running"
                )
            ).first()
            if running is not None:
                raise ConflictError(
                    f"{model!r} already runs experiment {running.name!r}; stop it first",
                    model=model,
                    active=running.name,
                )
        routes = self.routes
        try:
            live: RoutePolicy | None = routes.get(model).policy
        except NotFoundError:
            live = None
        wanted = [(a["arm"], a["version"]) for a in parsed]
        adopted = (
            live is not None
            and live.mode == "ab"
            and [(a.label, a.version) for a in live.versions] == wanted
            and live.sticky_header is not None
        )
        if adopted:
            assert live is not None
            state = routes.get(model)
            header = live.sticky_header
            design["weights"] = [a.weight for a in live.versions]
        else:
            header = (
                sticky_header or (live.sticky_header if live else None) or DEFAULT_STICKY_HEADER
            )
            versions = {a["version"] for a in parsed}
            policy = RoutePolicy(
                mode="ab",
                versions=[
                    Arm(version=a["version"], weight=a["weight"], arm=a["arm"]) for a in parsed
                ],
                sticky_header=header,
                shadow=[v for v in (live.shadow if live else []) if v not in versions],
                flags=list(live.flags) if live else [],
                cache=live.cache if live else True,
            )
            state = routes.set(model, policy, actor=actor, reason=f"experiment {name} started")
            design["weights"] = [a["weight"] for a in parsed]
        design["sticky_header"] = header
        design["adopted_route"] = bool(adopted)
        now = datetime.now(UTC)
        row = ExperimentRecord(
            id=uuid.uuid4().hex,
            name=name,
            model=model,
            status="running",
            arms=parsed,
            design=design,
            route_revision=state.revision,
            doc={"reports": []},
            actor=actor,
            started_at=now,
            updated_at=now,
        )
        with self.project.store.session() as s:
            s.add(row)
        found = _view(row)
        self._emit(
            ev.EXPERIMENT_STARTED,
            found,
            actor,
            primary=design["primary"],
            guardrails=[g["name"] for g in design["guardrails"]],
            planned_n=design["planned_n"],
            route_revision=state.revision,
        )
        return found

    # -- reading -------------------------------------------------------------------

    def get(self, ref: str) -> Experiment:
        """An experiment by name or id."""
        import sqlalchemy as sa

        from conveyor.experiments.tables import ExperimentRecord

        with self.project.store.read() as s:
            row = s.scalars(
                sa.select(ExperimentRecord).where(
                    sa.or_(ExperimentRecord.name == ref, ExperimentRecord.id == ref)
                )
            ).first()
            if row is None:
                raise NotFoundError(f"no experiment {ref!r}", experiment=ref)
            return _view(row)

    def list(self, *, model: str | None = None, running: bool = False) -> list[Experiment]:
        import sqlalchemy as sa

        from conveyor.experiments.tables import ExperimentRecord

        query = sa.select(ExperimentRecord).order_by(ExperimentRecord.started_at.desc())
        if model is not None:
            query = query.where(ExperimentRecord.model == model)
        if running:
            query = query.where(ExperimentRecord.status == "running")
        with self.project.store.read() as s:
            return [_view(r) for r in s.scalars(query.limit(200))]

    def analyze(self, ref: str) -> dict[str, Any]:
        """The experiment's judgment now, without saving anything."""
        found = self.get(ref)
        judged = self._judge(found)
        return {"experiment": found.to_dict(), **judged.to_dict()}

    def report(self, ref: str, *, save: bool = True) -> dict[str, Any]:
        """Judge the experiment now; save the report of its checks and, on a first
        ship / do-not-ship verdict, record ``experiment.concluded``."""
        from conveyor.checks.persist import save_report
        from conveyor.checks.result import Report
        from conveyor.experiments.tables import ExperimentRecord

        found = self.get(ref)
        judged = self._judge(found)
        report = Report.of(
            f"experiment:{found.name}",
            judged.checks,
            kind=REPORT_KIND,
            subject_version=",".join(f"{a['arm']}={a['version']}" for a in found.arms),
        )
        body = {
            "experiment": found.to_dict(),
            **judged.to_dict(),
            "report": report.to_dict(),
        }
        if not save:
            return body
        report_id = save_report(self.project.store, report)
        body["report_id"] = report_id
        summary = {
            "report_id": report_id,
            "recommendation": judged.recommendation,
            "reason": judged.reason,
            "at": report.created_at.isoformat(),
            "counts": judged.srm.counts,
        }
        concluded = False
        with self.project.store.session() as s:
            row = s.get(ExperimentRecord, found.id)
            assert row is not None
            doc = dict(row.doc)
            doc["reports"] = [*doc.get("reports", []), report_id][-100:]
            doc["last"] = summary
            if judged.recommendation != "keep running" and not doc.get("concluded"):
                doc["concluded"] = summary
                concluded = True
            row.doc = doc
            row.updated_at = datetime.now(UTC)
        if concluded:
            self._emit(
                ev.EXPERIMENT_CONCLUDED,
                found,
                None,
                recommendation=judged.recommendation,
                reason=judged.reason,
                report_id=report_id,
            )
        return body

    def _judge(self, found: Experiment) -> Any:
        import numpy as np

        from conveyor.experiments.analysis import judge
        from conveyor.experiments.data import METRIC_KINDS, MetricSpec, read_arms
        from conveyor.experiments.settings import experiments_of

        design = found.design
        looks = experiments_of(self.project.spec).looks
        guards = [MetricSpec(g["name"], g.get("tau")) for g in design["guardrails"]]
        primary = MetricSpec(design["primary"])
        data = read_arms(
            self.project,
            found.model,
            found.labels,
            [primary.name, *(g.name for g in guards)],
            since=found.started_at,
            until=found.stopped_at,
        )
        primary_looks = data.looks(primary, looks=looks, tau=float(design["tau"]))
        guard_looks = []
        for g in guards:
            tau = g.tau or METRIC_KINDS[g.name][3]
            if tau is None:  # a mean: a fifth of its standard deviation, at least a tiny one
                values = data.outcomes[g.name]
                sd = float(np.nanstd(values)) if np.isfinite(values).any() else 0.0
                tau = max(0.2 * sd, 1e-9)
            guard_looks.append(data.looks(g, looks=looks, tau=tau))
        return judge(
            primary_looks,
            guardrails=guard_looks,
            counts=data.counts,
            weights=design.get("weights") or [a["weight"] for a in found.arms],
            planned_n=int(design["planned_n"]),
            alpha=float(design["alpha"]),
            sequential_share=float(design.get("sequential_share", 0.2)),
        )

    # -- stopping ------------------------------------------------------------------

    def stop(
        self,
        ref: str,
        *,
        actor: str | None,
        winner: str | None = None,
        reason: str | None = None,
    ) -> Experiment:
        """Stop a running experiment: the route serves ``winner``'s version (an arm's
        name), by default the control arm's, to every request."""
        from conveyor.experiments.tables import ExperimentRecord
        from conveyor.serving.routes import RoutePolicy

        found = self.get(ref)
        if found.status != "running":
            raise ConflictError(
                f"experiment {found.name!r} is {found.status}, not running", experiment=found.name
            )
        chosen = winner or found.labels[0]
        arm = next((a for a in found.arms if a["arm"] == chosen), None)
        if arm is None:
            raise InvalidInputError(
                f"winner {chosen!r} is not an arm of {found.name!r} ({', '.join(found.labels)})",
                field="winner",
            )
        routes = self.routes
        try:
            live = routes.get(found.model).policy
            options: dict[str, Any] = {
                "sticky_header": live.sticky_header,
                "flags": list(live.flags),
                "cache": live.cache,
                "shadow": [v for v in live.shadow if v != arm["version"]],
            }
        except NotFoundError:
            options = {}
        state = routes.set(
            found.model,
            RoutePolicy.fixed(arm["version"], **options),
            actor=actor,
            reason=f"experiment {found.name} stopped: {chosen} serves"
            + (f" ({reason})" if reason else ""),
        )
        now = datetime.now(UTC)
        with self.project.store.session() as s:
            row = s.get(ExperimentRecord, found.id)
            assert row is not None
            if row.status != "running":
                raise ConflictError(f"experiment {found.name!r} was stopped meanwhile")
            row.status = "stopped"
            row.stopped_at = now
            row.updated_at = now
            row.doc = {**row.doc, "winner": winner, "stop_reason": reason}
            stopped = _view(row)
        self._emit(
            ev.EXPERIMENT_STOPPED,
            stopped,
            actor,
            winner=winner,
            reason=reason,
            route_revision=state.revision,
        )
        return stopped

    def _emit(self, kind: Any, found: Experiment, actor: str | None, **extra: Any) -> None:
        self.project.events.record(
            kind,
            subject=found.model,
            actor=actor,
            payload={
                "experiment_id": found.id,
                "name": found.name,
                "arms": {a["arm"]: a["version"] for a in found.arms},
                **extra,
            },
        )
