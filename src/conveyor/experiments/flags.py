"""Feature flags as first-class objects on the router's flag rules (``project.flags``).

::

    flags = project.flags
    flags.create("fraud", "beta-v4", version=4, match={"group": "beta"}, percent=5, actor="ana")
    flags.ramp("fraud", "beta-v4", 25, actor="ana")          # 25 % of matching keys
    flags.target("fraud", "beta-v4", {"country": "fr"}, actor="ana")
    flags.kill("fraud", "beta-v4", actor="ana", reason="p99")  # instant: one route revision
    flags.show("fraud", "beta-v4")["history"]                 # every change, who and why

A flag is a :class:`~conveyor.serving.routes.FlagRule` on a model's live route
(requests whose attributes match, and ``percent`` % of their sticky keys, go to the
flag's version), plus a row of its own with a revision and a history. Every change
writes the route through :class:`~conveyor.serving.route_store.RouteStore` (the path
``conveyor route rollback`` takes: one revision, the servers' watchers apply it) and
then the flag's row, its history and an audit event. ``kill`` removes the rule from
the route and keeps the flag (``ramp`` turns it on again); ``delete`` removes both.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import AlreadyExistsError, InvalidInputError, NotFoundError
from conveyor.experiments import events as ev

if TYPE_CHECKING:
    from conveyor.experiments.tables import FlagRecord
    from conveyor.project import Project
    from conveyor.serving.route_store import RouteState, RouteStore
    from conveyor.serving.routes import FlagRule

__all__ = ["Flags", "parse_match"]


def parse_match(match: Mapping[str, Any] | str | None) -> dict[str, str]:
    """Attributes to match, from a mapping or ``key=value,key=value``."""
    if match is None or match == "":
        return {}
    if isinstance(match, str):
        out: dict[str, str] = {}
        for part in match.split(","):
            key, eq, value = part.strip().partition("=")
            if not eq or not key.strip():
                raise InvalidInputError(f"a target is key=value, got {part!r}", field="match")
            out[key.strip()] = value.strip()
        return out
    if not isinstance(match, Mapping):
        raise InvalidInputError("match is an object of attribute -> value", field="match")
    return {str(k): str(v) for k, v in match.items()}


def _check_percent(percent: Any) -> float:
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 <= percent <= 100:
        raise InvalidInputError(f"percent is between 0 and 100, got {percent!r}", field="percent")
    return float(percent)


def _flag_dict(row: FlagRecord) -> dict[str, Any]:
    return {
        "id": row.id,
        "model": row.model,
        "name": row.name,
        "version": row.version,
        "match": dict(row.match),
        "percent": row.percent,
        "state": row.state,
        "revision": row.revision,
        "description": row.description,
        "actor": row.actor,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


class Flags:
    """Create, target, ramp, kill and delete feature flags; every change audited."""

    def __init__(self, project: Project) -> None:
        self.project = project

    @classmethod
    def for_project(cls, project: Project) -> Flags:
        return cls(project)

    @property
    def routes(self) -> RouteStore:
        from conveyor.serving.route_store import RouteStore

        return RouteStore(self.project.store, self.project.events, self.project.registry)

    # -- the route -----------------------------------------------------------------

    def _write_route(
        self, model: str, rule: FlagRule | None, name: str, actor: str | None, why: str
    ) -> RouteState:
        """The live route with flag ``name`` replaced by ``rule`` (or removed), written
        as one revision against the revision read (retried on a concurrent change)."""
        from conveyor.store.retry import retry_on_conflict

        routes = self.routes

        def write() -> RouteState:
            live = routes.get(model)
            flags = [f for f in live.policy.flags if f.name != name]
            if rule is not None:
                flags.append(rule)
            policy = live.policy.model_copy(update={"flags": flags})
            policy = type(policy).from_dict(policy.to_dict())  # validated again
            return routes.set(
                model, policy, actor=actor, reason=why, expected_revision=live.revision
            )

        return retry_on_conflict(write, what=f"flag {name} on {model}")

    @staticmethod
    def _rule(name: str, version: int, match: dict[str, str], percent: float) -> FlagRule:
        from conveyor.serving.routes import FlagRule

        return FlagRule(name=name, match=match, percent=percent, version=version)

    # -- changes -------------------------------------------------------------------

    def create(
        self,
        model: str,
        name: str,
        *,
        version: int,
        actor: str | None,
        match: Mapping[str, Any] | str | None = None,
        percent: float = 0.0,
        description: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """A new flag on ``model``'s live route (NotFoundError: no route, or no such
        version; AlreadyExistsError: the name is taken on this model)."""
        from conveyor.experiments.tables import FlagRecord

        targets = parse_match(match)
        share = _check_percent(percent)
        rule = self._rule(name, version, targets, share)  # InvalidInputError: a bad name
        self.project.registry.get(model, version)  # NotFoundError names the version
        if self._find(model, name) is not None:
            raise AlreadyExistsError(f"flag {name!r} already exists on {model!r}", flag=name)
        live = self.routes.get(model)
        if any(f.name == name for f in live.policy.flags):
            raise AlreadyExistsError(
                f"the route of {model!r} already has a flag rule {name!r} (set by hand)",
                flag=name,
            )
        state = self._write_route(model, rule, name, actor, reason or f"flag {name} created")
        now = datetime.now(UTC)
        row = FlagRecord(
            id=uuid.uuid4().hex,
            model=model,
            name=name,
            version=version,
            match=targets,
            percent=share,
            state="on",
            revision=1,
            description=description,
            actor=actor,
            created_at=now,
            updated_at=now,
        )
        with self.project.store.session() as s:
            s.add(row)
            self._history(s, row, "create", state.revision, actor, reason)
            flag = _flag_dict(row)
        self._emit(ev.FLAG_CREATED, flag, actor, route_revision=state.revision, reason=reason)
        return flag

    def ramp(
        self, model: str, name: str, percent: float, *, actor: str | None, reason: str | None = None
    ) -> dict[str, Any]:
        """Send ``percent`` % of the matching keys to the flag's version (a killed flag
        is turned on again)."""
        share = _check_percent(percent)
        return self._change(model, name, "ramp", actor, reason, percent=share)

    def target(
        self,
        model: str,
        name: str,
        match: Mapping[str, Any] | str,
        *,
        actor: str | None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Replace the attributes a request must match (``{}``: every request)."""
        return self._change(model, name, "target", actor, reason, match=parse_match(match))

    def kill(
        self, model: str, name: str, *, actor: str | None, reason: str | None = None
    ) -> dict[str, Any]:
        """The kill switch: the flag's rule leaves the live route in one revision."""
        return self._change(model, name, "kill", actor, reason)

    def _change(
        self,
        model: str,
        name: str,
        action: str,
        actor: str | None,
        reason: str | None,
        **update: Any,
    ) -> dict[str, Any]:
        from conveyor.experiments.tables import FlagRecord

        before = self._require(model, name)
        match = update.get("match", before["match"])
        percent = update.get("percent", before["percent"])
        state = "killed" if action == "kill" else ("on" if action == "ramp" else before["state"])
        rule = self._rule(name, before["version"], match, percent) if state == "on" else None
        why = reason or f"flag {name}: {action}"
        route = self._write_route(model, rule, name, actor, why)
        with self.project.store.session() as s:
            fresh = s.get(FlagRecord, before["id"])
            if fresh is None:
                raise NotFoundError(f"flag {name!r} of {model!r} was deleted meanwhile")
            fresh.match, fresh.percent, fresh.state = match, percent, state
            fresh.revision += 1
            fresh.actor = actor
            fresh.updated_at = datetime.now(UTC)
            self._history(s, fresh, action, route.revision, actor, reason)
            flag = _flag_dict(fresh)
        if action == "kill":
            self._emit(ev.FLAG_KILLED, flag, actor, route_revision=route.revision, reason=reason)
        else:
            self._emit(
                ev.FLAG_CHANGED,
                flag,
                actor,
                action=action,
                route_revision=route.revision,
                reason=reason,
                before=before,
            )
        return flag

    def delete(
        self, model: str, name: str, *, actor: str | None, reason: str | None = None
    ) -> dict[str, Any]:
        """Remove the flag (its rule from the route too); its history stays."""
        from conveyor.experiments.tables import FlagRecord

        found = self._require(model, name)
        route_revision: int | None = None
        live = self.routes.get(model)
        if any(f.name == name for f in live.policy.flags):
            route_revision = self._write_route(
                model, None, name, actor, reason or f"flag {name} deleted"
            ).revision
        with self.project.store.session() as s:
            fresh = s.get(FlagRecord, found["id"])
            if fresh is None:
                raise NotFoundError(f"flag {name!r} of {model!r} was deleted meanwhile")
            fresh.revision += 1
            fresh.state = "deleted"
            self._history(s, fresh, "delete", route_revision, actor, reason)
            flag = _flag_dict(fresh)
            s.delete(fresh)
        self._emit(ev.FLAG_DELETED, flag, actor, route_revision=route_revision, reason=reason)
        return flag

    # -- reading -------------------------------------------------------------------

    def list(self, model: str | None = None) -> list[dict[str, Any]]:
        import sqlalchemy as sa

        from conveyor.experiments.tables import FlagRecord

        query = sa.select(FlagRecord).order_by(FlagRecord.model, FlagRecord.name)
        if model is not None:
            query = query.where(FlagRecord.model == model)
        with self.project.store.read() as s:
            return [_flag_dict(r) for r in s.scalars(query)]

    def show(self, model: str, name: str) -> dict[str, Any]:
        """The flag and its history, newest change first."""
        import sqlalchemy as sa

        from conveyor.experiments.tables import FlagHistoryRecord

        found = self._require(model, name)
        with self.project.store.read() as s:
            history = [
                {
                    "revision": h.revision,
                    "action": h.action,
                    "flag": h.flag,
                    "route_revision": h.route_revision,
                    "actor": h.actor,
                    "reason": h.reason,
                    "at": h.at.isoformat(),
                }
                for h in s.scalars(
                    sa.select(FlagHistoryRecord)
                    .where(FlagHistoryRecord.model == model, FlagHistoryRecord.name == name)
                    .order_by(FlagHistoryRecord.id.desc())
                    .limit(200)
                )
            ]
        return {**found, "history": history}

    def _find(self, model: str, name: str) -> dict[str, Any] | None:
        import sqlalchemy as sa

        from conveyor.experiments.tables import FlagRecord

        with self.project.store.read() as s:
            row = s.scalars(
                sa.select(FlagRecord).where(FlagRecord.model == model, FlagRecord.name == name)
            ).first()
            return None if row is None else _flag_dict(row)

    def _require(self, model: str, name: str) -> dict[str, Any]:
        found = self._find(model, name)
        if found is None:
            raise NotFoundError(f"no flag {name!r} on {model!r}", model=model, flag=name)
        return found

    @staticmethod
    def _history(
        s: Any,
        row: FlagRecord,
        action: str,
        route_revision: int | None,
        actor: str | None,
        reason: str | None,
    ) -> None:
        from conveyor.experiments.tables import FlagHistoryRecord

        s.add(
            FlagHistoryRecord(
                model=row.model,
                name=row.name,
                revision=row.revision,
                action=action,
                flag=_flag_dict(row),
                route_revision=route_revision,
                actor=actor,
                reason=reason,
                at=datetime.now(UTC),
            )
        )

    def _emit(self, kind: Any, flag: dict[str, Any], actor: str | None, **extra: Any) -> None:
        self.project.events.record(
            kind,
            subject=flag["model"],
            actor=actor,
            payload={
                "flag": flag["name"],
                "revision": flag["revision"],
                "version": flag["version"],
                "match": flag["match"],
                "percent": flag["percent"],
                **extra,
            },
        )
