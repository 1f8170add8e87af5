"""Lineage: which runs (training runs, pipeline steps) read and wrote which dataset versions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from conveyor.store.database import MetadataStore

__all__ = ["Lineage", "lineage_of_run", "lineage_of_version", "record_lineage"]


def record_lineage(
    store: MetadataStore, run_id: str, dataset_version_id: str, role: str, *, who: str | None = None
) -> None:
    """Record that ``run_id`` read (``input``) or wrote (``output``) a dataset version.

    Recording the same link twice is a no-op; NotFoundError if the version does not exist.
    """
    import sqlalchemy as sa

    from conveyor.data.tables import LINEAGE_ROLES, DatasetVersionRecord, LineageRecord
    from conveyor.store.types import utcnow

    if role not in LINEAGE_ROLES:
        raise InvalidInputError(
            f"lineage role must be one of {', '.join(LINEAGE_ROLES)}, got {role!r}", field="role"
        )
    if not isinstance(dataset_version_id, str) or not dataset_version_id:
        raise InvalidInputError(
            f"a dataset version id is a non-empty string, got {dataset_version_id!r}",
            field="dataset_version_id",
        )
    with store.session() as session:
        if session.get(DatasetVersionRecord, dataset_version_id) is None:
            raise NotFoundError(
                f"{who or f'run {run_id}'} recorded lineage ({role}) to dataset version "
                f"{dataset_version_id!r}, which does not exist",
                kind="dataset_version",
                id=dataset_version_id,
            )
        existing = session.scalar(
            sa.select(LineageRecord.id).where(
                LineageRecord.run_id == run_id,
                LineageRecord.dataset_version_id == dataset_version_id,
                LineageRecord.role == role,
            )
        )
        if existing is None:
            session.add(
                LineageRecord(
                    run_id=run_id,
                    dataset_version_id=dataset_version_id,
                    role=role,
                    created_at=utcnow(),
                )
            )


@dataclass(frozen=True, slots=True)
class Lineage:
    """Links of one run or one version: (run id, version id) pairs by role."""

    inputs: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...]


def _links(store: MetadataStore, column: str, value: str) -> Lineage:
    import sqlalchemy as sa

    from conveyor.data.tables import LineageRecord as L

    with store.read() as session:
        rows = session.execute(
            sa.select(L.run_id, L.dataset_version_id, L.role)
            .where(getattr(L, column) == value)
            .order_by(L.id)
        ).all()
    return Lineage(
        inputs=tuple((r, v) for r, v, role in rows if role == "input"),
        outputs=tuple((r, v) for r, v, role in rows if role == "output"),
    )


def lineage_of_run(store: MetadataStore, run_id: str) -> Lineage:
    """The versions a run read (inputs) and wrote (outputs)."""
    return _links(store, "run_id", run_id)


def lineage_of_version(store: MetadataStore, dataset_version_id: str) -> Lineage:
    """The runs that read (inputs) and wrote (outputs) a version."""
    return _links(store, "dataset_version_id", dataset_version_id)
