"""What :func:`~conveyor.data.validation.validate` hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.checks.result import Report

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.data.schema import SchemaChange

__all__ = ["REASON_COLUMN", "REASON_SEPARATOR", "ValidationResult"]

#: The column quarantined rows carry: the names of the expectations they break.
REASON_COLUMN = "_quarantine_reason"
REASON_SEPARATOR = "; "


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """A batch judged against its expectations.

    ``report`` holds one check per expectation (plus the schema-change
    checks when an accepted schema was given). ``valid`` and ``invalid``
    split the rows (``split=True``): ``invalid`` holds every row that breaks
    at least one error-severity row-level expectation, with the names of the
    ones it breaks in :data:`REASON_COLUMN` (``"amount.between;
    merchant_category.in_set"``); ``valid`` holds the rest, so together they
    are the input, row for row. With ``split=False`` both are None and only
    the report and the counts are computed.
    """

    report: Report
    row_count: int
    """Rows in the batch."""
    failed_rows: int
    """Rows breaking at least one error-severity row-level expectation."""
    row_failures: dict[str, int]
    """Error-severity row-level expectation name -> rows breaking it: the
    reasons found in ``invalid`` (warnings are in the report only)."""
    batch_failures: tuple[str, ...]
    """Names of failed error-severity checks about the whole batch (row_count,
    freshness, schema, a removed or retyped column, an expectation whose column
    is missing): each rejects the batch under the ``quarantine`` policy."""
    schema: dict[str, Any]
    """The batch's schema, as :func:`conveyor.data.schema.schema_of` writes it."""
    schema_change: SchemaChange | None = None
    """What changed since the accepted schema (None when none was given)."""
    table: pa.Table | None = field(default=None, repr=False)
    """The batch as validated, in its order, when it was given in memory and split
    (None for a Parquet path: its rows exist only as ``valid`` and ``invalid``)."""
    valid: pa.Table | None = field(default=None, repr=False)
    invalid: pa.Table | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        """True when no error-severity check failed."""
        return self.report.passed

    @property
    def split(self) -> bool:
        """True when the rows were split into ``valid`` and ``invalid``."""
        return self.valid is not None and self.invalid is not None

    def reasons(self) -> dict[str, int]:
        """Failed check -> rows it concerns (a batch-level failure concerns every row)."""
        counts = {name: self.row_count for name in self.batch_failures}
        counts.update({name: rows for name, rows in self.row_failures.items() if rows})
        return counts
