"""What the registry hands back: frozen snapshots of versions and alias moves, and loaded models."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.registry.flavors import Flavor
    from conveyor.registry.signature import Signature
    from conveyor.registry.tables import AliasHistoryRecord, ModelVersionRecord

__all__ = ["AliasMove", "LoadedModel", "ModelVersion"]


#: The largest version number a registry holds (the column is a 32-bit integer).
MAX_VERSION = 2**31 - 1


def version_number(value: object) -> int | None:
    """``value`` as a version number (an int, or a string of ASCII digits), else None.

    ``str.isdigit()`` alone also accepts digits ``int()`` refuses (``'³'``). A
    number no registry can hold (above :data:`MAX_VERSION`) is None too, so a
    lookup of ``m@99999999999`` is "not found", never a database error.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value <= MAX_VERSION else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        number = int(value)
        return number if number <= MAX_VERSION else None
    return None


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One immutable version of a registered model, with its lineage."""

    id: str
    model: str
    number: int
    flavor: str
    artifact_digest: str
    artifact_size: int
    signature: dict[str, Any] | None
    libraries: dict[str, str]
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, Any]
    run_id: str | None
    parent_id: str | None
    git_commit: str | None
    git_dirty: bool | None
    environment: dict[str, Any]
    dataset_version_ids: list[str]
    status: str
    created_at: datetime
    #: Lineage beyond data sets, e.g. ``{"kind": "feature_service", "name", "version",
    #: "views": {view: {"version", "datasets", "path"}}, "features"}``; empty for
    #: versions registered before it existed.
    inputs: list[dict[str, Any]] = field(default_factory=list)
    #: The version's prediction as data, recorded at registration when it has one
    #: (:mod:`conveyor.registry.formula`): ``{"kind", "digest", "size"}`` of an artifact
    #: a server answers from without unpickling the model; None otherwise.
    compiled: dict[str, Any] | None = None

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.number}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ref": self.ref,
            "model": self.model,
            "number": self.number,
            "flavor": self.flavor,
            "artifact_digest": self.artifact_digest,
            "artifact_size": self.artifact_size,
            "signature": self.signature,
            "libraries": self.libraries,
            "params": self.params,
            "metrics": self.metrics,
            "tags": self.tags,
            "run_id": self.run_id,
            "parent_id": self.parent_id,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
            "environment": self.environment,
            "dataset_version_ids": self.dataset_version_ids,
            "inputs": self.inputs,
            "compiled": self.compiled,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_record(cls, row: ModelVersionRecord | Any) -> ModelVersion:
        """From an ORM record or a Core row of :func:`conveyor.registry.reads.version_columns`."""
        from conveyor.registry.reads import document

        return cls(
            id=row.id,
            model=row.model,
            number=row.number,
            flavor=row.flavor,
            artifact_digest=row.artifact_digest,
            artifact_size=row.artifact_size,
            signature=document(row.signature),
            libraries=document(row.libraries),
            params=document(row.params),
            metrics=document(row.metrics),
            tags=document(row.tags),
            run_id=row.run_id,
            parent_id=row.parent_id,
            git_commit=row.git_commit,
            git_dirty=row.git_dirty,
            environment=document(row.environment),
            dataset_version_ids=document(row.dataset_version_ids),
            status=row.status,
            created_at=row.created_at,
            inputs=document(row.inputs) or [],
            compiled=document(row.compiled),
        )


@dataclass(frozen=True, slots=True)
class AliasMove:
    """One entry of an alias's history; ``to_version_id`` None means the alias was removed."""

    id: int
    model: str
    alias: str
    from_version_id: str | None
    to_version_id: str | None
    actor: str | None
    reason: str | None
    forced: bool
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "alias": self.alias,
            "from_version_id": self.from_version_id,
            "to_version_id": self.to_version_id,
            "actor": self.actor,
            "reason": self.reason,
            "forced": self.forced,
            "at": self.at.isoformat(),
        }

    @classmethod
    def from_record(cls, row: AliasHistoryRecord) -> AliasMove:
        return cls(
            id=row.id,
            model=row.model,
            alias=row.alias,
            from_version_id=row.from_version_id,
            to_version_id=row.to_version_id,
            actor=row.actor,
            reason=row.reason,
            forced=row.forced,
            at=row.at,
        )


@dataclass(frozen=True)
class LoadedModel:
    """A version's model, ready to predict; :meth:`predict` enforces the signature."""

    version: ModelVersion
    model: Any
    flavor: Flavor = field(repr=False)
    signature: Signature | None
    #: Library mismatches found at load (each was also a warning).
    library_mismatches: tuple[str, ...] = ()

    def predict(self, frame: Any, *, allow_extra: bool = False) -> Any:
        """Predictions for ``frame``; InvalidInputError naming a column that does not fit."""
        from conveyor.data.frames import to_arrow

        if self.signature is not None:
            table = self.signature.enforce(frame, allow_extra=allow_extra)
        else:
            table = to_arrow(frame)
        return self.flavor.predict(self.model, table)
