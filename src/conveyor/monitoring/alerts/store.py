"""The engine's :class:`~conveyor.monitoring.alerts.engine.Store` in the metadata store,
plus what the CLI and HTTP read and change: incidents, acknowledgements, silences,
sinks' health, deliveries and review items (tables in :mod:`conveyor.monitoring.tables`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from conveyor.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from conveyor.monitoring.alerts.delivery import Delivery, SinkStatus
    from conveyor.monitoring.alerts.engine import Incident, Silence
    from conveyor.store.database import MetadataStore

__all__ = ["SqlStore", "incident_from_doc", "take_lease"]

_TIMES = (
    "started_at",
    "fired_at",
    "resolved_at",
    "clear_since",
    "notified_at",
    "acked_at",
    "updated_at",
)
#: Longest silence: a forgotten silence must not hide alerts for ever.
MAX_SILENCE = timedelta(days=30)


def incident_from_doc(doc: Mapping[str, Any]) -> Incident:
    from conveyor.monitoring.alerts.engine import Incident

    values = dict(doc)
    for name in _TIMES:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    return Incident(**values)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class SqlStore:
    """Alerts' state in ``store`` (SQLite or PostgreSQL)."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    # -- the engine's Store ---------------------------------------------------------

    def open_incidents(self) -> dict[str, Incident]:
        from conveyor.monitoring.tables import AlertIncidentRecord as R

        with self.store.read() as s:
            rows = s.scalars(sa.select(R).where(R.state.in_(("pending", "firing")))).all()
            return {r.fingerprint: incident_from_doc(r.doc) for r in rows}

    def last_resolved(self, fingerprint: str) -> Incident | None:
        from conveyor.monitoring.tables import AlertIncidentRecord as R

        with self.store.read() as s:
            row = s.scalars(
                sa.select(R)
                .where(R.fingerprint == fingerprint, R.state == "resolved")
                .order_by(R.resolved_at.desc())
                .limit(1)
            ).first()
            return None if row is None else incident_from_doc(row.doc)

    def save(self, incidents: Iterable[Incident], dropped: Iterable[str]) -> None:
        from conveyor.monitoring.tables import AlertIncidentRecord as R

        with self.store.session() as s:
            for incident in incidents:
                row = s.get(R, incident.id, with_for_update=True)
                if row is None:
                    row = R(id=incident.id)
                    s.add(row)
                elif incident.acked_at is None and row.doc.get("acked_at"):
                    # acknowledged while this evaluation ran: keep it
                    incident.acked_at = datetime.fromisoformat(row.doc["acked_at"])
                    incident.acked_by = row.doc.get("acked_by")
                doc = incident.to_dict()
                row.fingerprint = incident.fingerprint
                row.rule = incident.rule
                row.model = incident.model
                row.severity = incident.severity
                row.state = incident.state
                row.started_at = incident.started_at
                row.resolved_at = incident.resolved_at
                row.updated_at = incident.updated_at or datetime.now(UTC)
                row.doc = doc
            gone = list(dropped)
            if gone:
                s.execute(sa.delete(R).where(R.id.in_(gone)))

    def silences(self, now: datetime) -> list[Silence]:
        from conveyor.monitoring.tables import AlertSilenceRecord as R

        with self.store.read() as s:
            rows = s.scalars(sa.select(R).where(R.starts_at <= now, R.ends_at > now)).all()
            return [_silence(r) for r in rows]

    # -- reading ----------------------------------------------------------------------

    def incidents(
        self, *, state: str | None = None, model: str | None = None, limit: int = 100
    ) -> list[Incident]:
        """Newest first; ``state``: pending, firing, resolved, or open (pending + firing)."""
        from conveyor.monitoring.tables import AlertIncidentRecord as R

        query = sa.select(R).order_by(R.started_at.desc()).limit(limit)
        if state == "open":
            query = query.where(R.state.in_(("pending", "firing")))
        elif state is not None:
            if state not in ("pending", "firing", "resolved"):
                raise InvalidInputError(
                    f"state {state!r}: expected pending, firing, resolved or open",
                    field="state",
                )
            query = query.where(R.state == state)
        if model is not None:
            query = query.where(R.model == model)
        with self.store.read() as s:
            return [incident_from_doc(r.doc) for r in s.scalars(query).all()]

    def incident(self, alert_id: str) -> Incident:
        from conveyor.monitoring.tables import AlertIncidentRecord as R

        with self.store.read() as s:
            row = s.get(R, alert_id)
            if row is None:
                raise NotFoundError(f"no alert {alert_id!r}", alert_id=alert_id)
            return incident_from_doc(row.doc)

    def deliveries(self, alert_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        from conveyor.monitoring.tables import AlertDeliveryRecord as R

        with self.store.read() as s:
            rows = s.scalars(sa.select(R).order_by(R.id.desc()).limit(limit * 10)).all()
            out = [
                {
                    "sink": r.sink,
                    "kind": r.kind,
                    "alert_ids": list(r.alert_ids),
                    "ok": r.ok,
                    "attempts": r.attempts,
                    "error": r.error,
                    "seconds": r.seconds,
                    "at": r.at.isoformat(),
                }
                for r in rows
                if alert_id is None or alert_id in r.alert_ids
            ]
            return out[:limit]

    def sinks(self) -> list[dict[str, Any]]:
        from conveyor.monitoring.tables import AlertSinkRecord as R

        with self.store.read() as s:
            return [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "state": r.state,
                    "delivered": r.delivered,
                    "failed": r.failed,
                    "consecutive_failures": r.consecutive_failures,
                    "last_error": r.last_error,
                    "last_ok_at": r.last_ok_at.isoformat() if r.last_ok_at else None,
                    "last_failure_at": (
                        r.last_failure_at.isoformat() if r.last_failure_at else None
                    ),
                }
                for r in s.scalars(sa.select(R).order_by(R.name)).all()
            ]

    def silence_list(self, *, active_at: datetime | None = None) -> list[Silence]:
        from conveyor.monitoring.tables import AlertSilenceRecord as R

        query = sa.select(R).order_by(R.ends_at.desc())
        if active_at is not None:
            query = query.where(R.starts_at <= active_at, R.ends_at > active_at)
        with self.store.read() as s:
            return [_silence(r) for r in s.scalars(query).all()]

    def reviews(self, alert_id: str | None = None) -> list[dict[str, Any]]:
        from conveyor.monitoring.tables import AlertReviewRecord as R

        query = sa.select(R).order_by(R.created_at.desc())
        if alert_id is not None:
            query = query.where(R.alert_id == alert_id)
        with self.store.read() as s:
            return [
                {
                    "id": r.id,
                    "alert_id": r.alert_id,
                    "model": r.model,
                    "note": r.note,
                    "state": r.state,
                    "created_at": r.created_at.isoformat(),
                }
                for r in s.scalars(query).all()
            ]

    # -- changing -------------------------------------------------------------------

    def ack(self, alert_id: str, *, by: str | None, now: datetime | None = None) -> Incident:
        """Acknowledge: no more repeat notifications for this incident."""
        from conveyor.monitoring.tables import AlertIncidentRecord as R

        now = now or datetime.now(UTC)
        with self.store.session() as s:
            row = s.get(R, alert_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"no alert {alert_id!r}", alert_id=alert_id)
            incident = incident_from_doc(row.doc)
            if incident.acked_at is None:
                incident.acked_at = now
                incident.acked_by = by
                row.doc = incident.to_dict()
            return incident

    def add_silence(
        self,
        matchers: Mapping[str, str],
        *,
        ends_at: datetime,
        starts_at: datetime | None = None,
        by: str | None = None,
        comment: str | None = None,
    ) -> Silence:
        from conveyor.monitoring.alerts.engine import Silence
        from conveyor.monitoring.tables import AlertSilenceRecord as R

        now = datetime.now(UTC)
        starts = _utc(starts_at) if starts_at is not None else now
        ends = _utc(ends_at)
        if not matchers or not all(
            isinstance(k, str) and k and isinstance(v, str) and v for k, v in matchers.items()
        ):
            raise InvalidInputError(
                "a silence needs one or more matchers label=value (e.g. model=fraud)",
                field="matchers",
            )
        if ends <= starts:
            raise InvalidInputError("a silence must end after it starts", field="ends_at")
        if ends - starts > MAX_SILENCE:
            raise InvalidInputError(
                f"a silence lasts at most {MAX_SILENCE.days} days", field="ends_at"
            )
        silence = Silence(uuid.uuid4().hex[:16], dict(matchers), ends, starts, by, comment)
        with self.store.session() as s:
            s.add(
                R(
                    id=silence.id,
                    matchers=dict(matchers),
                    starts_at=starts,
                    ends_at=ends,
                    created_by=by,
                    comment=comment,
                    created_at=now,
                )
            )
        return silence

    def expire_silence(self, silence_id: str) -> Silence:
        """End a silence now (it stays listed, expired)."""
        from conveyor.monitoring.tables import AlertSilenceRecord as R

        now = datetime.now(UTC)
        with self.store.session() as s:
            row = s.get(R, silence_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"no silence {silence_id!r}", silence_id=silence_id)
            if row.ends_at > now:
                row.ends_at = max(now, row.starts_at)
            return _silence(row)

    def record_delivery(self, delivery: Delivery, status: SinkStatus) -> None:
        from conveyor.monitoring.tables import AlertDeliveryRecord, AlertSinkRecord

        now = datetime.now(UTC)
        with self.store.session() as s:
            s.add(
                AlertDeliveryRecord(
                    sink=delivery.sink,
                    kind=delivery.kind,
                    alert_ids=list(delivery.alert_ids),
                    ok=delivery.ok,
                    attempts=delivery.attempts,
                    error=delivery.error,
                    seconds=delivery.seconds,
                    at=now,
                )
            )
            row = s.get(AlertSinkRecord, delivery.sink, with_for_update=True)
            if row is None:
                row = AlertSinkRecord(
                    name=delivery.sink,
                    kind=status.kind,
                    delivered=0,
                    failed=0,
                    consecutive_failures=0,
                )
                s.add(row)
            row.state = "ok" if delivery.ok else "failing"
            if delivery.ok:
                row.delivered = (row.delivered or 0) + 1
                row.consecutive_failures = 0
                row.last_ok_at = now
            else:
                row.failed = (row.failed or 0) + 1
                row.consecutive_failures = (row.consecutive_failures or 0) + 1
                row.last_error = delivery.error
                row.last_failure_at = now
            row.updated_at = now

    def open_review(self, alert_id: str, model: str | None, note: str | None) -> str:
        from conveyor.monitoring.tables import AlertReviewRecord as R

        review_id = uuid.uuid4().hex[:16]
        with self.store.session() as s:
            s.add(
                R(
                    id=review_id,
                    alert_id=alert_id,
                    model=model,
                    note=note,
                    state="open",
                    created_at=datetime.now(UTC),
                )
            )
        return review_id


def _silence(row: Any) -> Silence:
    from conveyor.monitoring.alerts.engine import Silence

    return Silence(
        row.id,
        dict(row.matchers),
        _utc(row.ends_at),
        _utc(row.starts_at),
        row.created_by,
        row.comment,
    )


def take_lease(store: MetadataStore, holder: str, ttl_s: float, now: datetime) -> bool:
    """Whether ``holder`` evaluates now: it holds the lease, or the lease lapsed and it
    took it (a compare-and-set: of two takers, one wins)."""
    from conveyor.monitoring.tables import AlertLeaseRecord as R

    expires = now + timedelta(seconds=ttl_s)
    with store.session() as s:
        result: Any = s.execute(
            sa.update(R)
            .where(R.name == "evaluator", sa.or_(R.holder == holder, R.expires_at < now))
            .values(holder=holder, expires_at=expires)
        )
        if result.rowcount:
            return True
        if s.get(R, "evaluator") is not None:
            return False
    try:
        with store.session() as s:
            s.add(R(name="evaluator", holder=holder, expires_at=expires))
    except Exception:  # another holder inserted it first
        return False
    return True
