"""Schemas of tables as plain data, and what changed between two of them.

A schema is stored as ``{"columns": [{"name", "type", "nullable"}, ...]}``
with Arrow type names (``int64``, ``double``, ``string``,
``timestamp[us, tz=UTC]``...), so it is JSON in the metadata store and
readable in a diff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.checks.result import CheckResult

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["SchemaChange", "diff_schema", "schema_of"]


def schema_of(table: pa.Table | pa.Schema) -> dict[str, Any]:
    """The JSON form of a table's (or an Arrow schema's) columns."""
    schema = table if not hasattr(table, "schema") else table.schema
    return {
        "columns": [
            {"name": f.name, "type": str(f.type), "nullable": bool(f.nullable)} for f in schema
        ]
    }


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """Columns added, removed or retyped, against the last accepted schema."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    type_changed: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.type_changed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "type_changed": {k: list(v) for k, v in self.type_changed.items()},
        }

    def checks(self) -> list[CheckResult]:
        """The change as checks: a removed or retyped column fails, an added one warns."""
        return [
            CheckResult(
                "schema.columns_removed",
                not self.removed,
                observed=self.removed,
                threshold=[],
                detail=f"columns missing since the last accepted version: {', '.join(self.removed)}"
                if self.removed
                else "no column removed",
            ),
            CheckResult(
                "schema.types_changed",
                not self.type_changed,
                observed={k: f"{a} -> {b}" for k, (a, b) in self.type_changed.items()},
                threshold={},
                detail="; ".join(f"{k}: {a} -> {b}" for k, (a, b) in self.type_changed.items())
                or "no column changed type",
            ),
            CheckResult(
                "schema.columns_added",
                not self.added,
                observed=self.added,
                threshold=[],
                detail=f"new columns: {', '.join(self.added)}" if self.added else "no column added",
                severity="warning",
            ),
        ]


def diff_schema(accepted: dict[str, Any] | None, current: dict[str, Any]) -> SchemaChange:
    """What changed from ``accepted`` (None: nothing accepted yet, so nothing changed)."""
    if accepted is None:
        return SchemaChange()
    old = {c["name"]: c["type"] for c in accepted["columns"]}
    new = {c["name"]: c["type"] for c in current["columns"]}
    return SchemaChange(
        added=[n for n in new if n not in old],
        removed=[n for n in old if n not in new],
        type_changed={
            n: (old[n], new[n]) for n in new if n in old and _logical(old[n]) != _logical(new[n])
        },
    )


def _logical(type_name: str) -> str:
    """An Arrow type name without its physical layout: ``large_string`` and ``string``
    (``string_view``), ``large_list<...>`` and ``list<...>`` hold the same values, and
    which one a reader gives (pandas, Parquet, DuckDB) is not a change of the data."""
    return (
        type_name.replace("large_", "")
        .replace("string_view", "string")
        .replace("binary_view", "binary")
    )
