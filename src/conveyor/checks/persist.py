"""Reports in the metadata store: save once, read back exactly, list newest first.

A saved report is immutable: its row and its check rows are written in one
transaction, and saving the same report id again is refused
(:class:`AlreadyExistsError`) rather than silently replacing what a gate
decided. ``observed`` and ``threshold`` come back exactly as they went in
(ints stay ints, floats keep every bit); tuples come back as lists and
values that are not JSON are stored the way :meth:`Report.to_json` writes
them (NaN and infinity as null, other objects as strings).
"""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from conveyor.checks.result import CheckResult, Report
from conveyor.errors import AlreadyExistsError, InvalidInputError, NotFoundError
from conveyor.store.database import MetadataStore, page
from conveyor.store.models import CheckResultRecord, ReportRecord, RunRecord
from conveyor.store.paging import Page
from conveyor.store.types import aware_utc

__all__ = ["get_report", "list_reports", "save_report"]

# Column widths, checked up front so SQLite and PostgreSQL refuse the same values.
_LIMITS = {"id": 32, "kind": 50, "subject": 300, "subject_version": 100, "check name": 300}


def save_report(store: MetadataStore, report: Report, *, run_id: str | None = None) -> str:
    """Store ``report`` and its checks in one transaction; return its id.

    ``run_id`` links the report to the run it judged (NotFoundError if there
    is no such run). Saving a report id that is already stored raises
    AlreadyExistsError and changes nothing.
    """
    if not isinstance(report, Report):
        raise InvalidInputError(
            f"save_report takes a Report, got {type(report).__name__}", field="report"
        )
    record = ReportRecord(
        id=_text(report.id, "id"),
        kind=_text(report.kind, "kind"),
        subject=_text(report.subject, "subject"),
        subject_version=(
            None
            if report.subject_version is None
            else _text(report.subject_version, "subject_version")
        ),
        passed=report.passed,
        verdict=report.verdict,
        created_at=aware_utc(report.created_at, "created_at"),
        run_id=run_id,
        checks=[_check_record(position, check) for position, check in enumerate(report.checks)],
    )
    try:
        with store.session() as session:
            if run_id is not None:
                found = session.scalar(sa.select(RunRecord.id).where(RunRecord.id == run_id))
                if found is None:
                    raise NotFoundError(
                        f"report {report.id}: no run with id {run_id!r} to link it to",
                        kind="run",
                        id=run_id,
                    )
            session.add(record)
    except AlreadyExistsError as exc:
        raise AlreadyExistsError(
            f"report {report.id} is already saved; a saved report is never replaced "
            "(a new decision is a new Report, with a new id)",
            kind="report",
            id=report.id,
        ) from exc
    return record.id


def get_report(store: MetadataStore, report_id: str) -> Report:
    """The saved report with this id, checks in their original order, or NotFoundError."""
    if not isinstance(report_id, str) or not report_id:
        raise InvalidInputError(
            f"a report id is a non-empty string, got {report_id!r}", field="report_id"
        )
    stmt = (
        sa.select(ReportRecord)
        .where(ReportRecord.id == report_id)
        .options(selectinload(ReportRecord.checks))
    )
    with store.read() as session:
        record = session.scalars(stmt).one_or_none()
        if record is None:
            raise NotFoundError(f"no report with id {report_id!r}", kind="report", id=report_id)
        return _report(record)


def list_reports(
    store: MetadataStore,
    *,
    subject: str | None = None,
    kind: str | None = None,
    run_id: str | None = None,
    subject_version: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Report]:
    """Saved reports newest first, ``limit`` at a time; pass ``next_cursor`` back for more."""
    stmt = sa.select(ReportRecord).options(selectinload(ReportRecord.checks))
    if subject is not None:
        stmt = stmt.where(ReportRecord.subject == subject)
    if kind is not None:
        stmt = stmt.where(ReportRecord.kind == kind)
    if run_id is not None:
        stmt = stmt.where(ReportRecord.run_id == run_id)
    if subject_version is not None:
        stmt = stmt.where(ReportRecord.subject_version == subject_version)
    return page(
        store,
        stmt,
        ReportRecord.created_at,
        ReportRecord.id,
        _report,
        limit=limit,
        cursor=cursor,
        listing="reports",
    )


def _check_record(position: int, check: CheckResult) -> CheckResultRecord:
    if not isinstance(check, CheckResult):
        raise InvalidInputError(
            f"a report holds CheckResult objects, got {type(check).__name__} at "
            f"position {position}",
            field="checks",
        )
    if not isinstance(check.detail, str):
        raise InvalidInputError(
            f"check {check.name!r}: detail must be a string, got {type(check.detail).__name__}",
            field="detail",
        )
    plain = check.to_dict()
    return CheckResultRecord(
        position=position,
        name=_text(check.name, "check name"),
        passed=check.passed,
        severity=check.severity,
        observed=_finite(plain["observed"]),
        threshold=_finite(plain["threshold"]),
        detail=check.detail,
    )


def _report(record: ReportRecord) -> Report:
    return Report(
        subject=record.subject,
        checks=[
            CheckResult(
                name=c.name,
                passed=c.passed,
                observed=c.observed,
                threshold=c.threshold,
                detail=c.detail,
                severity="warning" if c.severity == "warning" else "error",
            )
            for c in record.checks
        ],
        kind=record.kind,
        subject_version=record.subject_version,
        id=record.id,
        created_at=record.created_at,
    )


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity; store them as null, as ``Report.to_json`` does."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(
            f"report {field} must be a non-empty string, got {value!r}", field=field
        )
    if len(value) > _LIMITS[field]:
        raise InvalidInputError(
            f"report {field} is {len(value)} characters long; at most {_LIMITS[field]} are allowed",
            field=field,
        )
    return value
