"""Policies: what happens to a validated batch.

``fail``
    The batch is rejected when any error-severity check failed (``mostly``
    respected): nothing becomes a dataset version and every row goes to
    quarantine, tagged with the failed batch-level checks (``batch_rejected``
    when the batch failed on row-level checks only) and its own row-level
    reasons. A batch that passes still sends the rows breaking an
    expectation (tolerated by ``mostly``) to quarantine.
``quarantine`` (the default)
    Rows breaking an error-severity row-level expectation go to quarantine,
    the rest continue. A failed batch-level check (row count, freshness,
    schema, a removed or retyped column, an expectation that could not run)
    rejects the whole batch, as ``fail`` does.
``warn``
    Everything continues, in its original order; the report records the
    failures and nothing is quarantined.

Nothing is dropped silently: accepted rows plus quarantined rows are always
the input rows (on rejection, quarantined rows alone are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from conveyor.data.validation.result import REASON_COLUMN, REASON_SEPARATOR, ValidationResult
from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["BATCH_REJECTED", "POLICIES", "Policy", "PolicyDecision", "apply_policy"]

Policy = Literal["fail", "quarantine", "warn"]
POLICIES: tuple[Policy, ...] = ("fail", "quarantine", "warn")
#: The reason of a row in a batch rejected (``fail``) for other rows' failures.
BATCH_REJECTED = "batch_rejected"


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """What becomes (part of) a dataset version and what waits in quarantine."""

    accepted: pa.Table | None
    """Rows to store as a version (None when the batch is rejected)."""
    quarantined: pa.Table | None
    """Rows set aside, with ``_quarantine_reason`` (None when there are none)."""
    batch_rejected: bool
    reasons: dict[str, int]
    """Failed check -> rows it concerns."""


def apply_policy(result: ValidationResult, policy: Policy = "quarantine") -> PolicyDecision:
    """Decide, by ``policy``, which rows continue and which go to quarantine."""
    if policy not in POLICIES:
        raise InvalidInputError(
            f"policy must be one of {', '.join(POLICIES)}, got {policy!r}", field="policy"
        )
    if result.valid is None or result.invalid is None:
        raise InvalidInputError(
            "apply_policy needs the rows: validate with split=True", field="result"
        )
    reasons = result.reasons()
    if policy == "warn":
        return PolicyDecision(_all_rows(result), None, batch_rejected=False, reasons=reasons)
    rejected = bool(result.batch_failures) if policy == "quarantine" else not result.passed
    if rejected:
        # Under `fail`, a batch can be rejected for its rows alone; the rows that
        # broke nothing still need a reason to be where they are.
        prefix = list(result.batch_failures) or [BATCH_REJECTED]
        reasons = {**dict.fromkeys(prefix, result.row_count), **reasons}
        quarantined = _every_row(result, prefix)
        return PolicyDecision(None, quarantined, batch_rejected=True, reasons=reasons)
    invalid = result.invalid if result.invalid.num_rows else None
    row_reasons = {k: v for k, v in reasons.items() if k in result.row_failures}
    return PolicyDecision(result.valid, invalid, batch_rejected=False, reasons=row_reasons)


def _all_rows(result: ValidationResult) -> pa.Table:
    import pyarrow as pa

    assert result.valid is not None and result.invalid is not None
    if result.table is not None:
        return result.table
    return pa.concat_tables([result.valid, result.invalid.drop_columns([REASON_COLUMN])])


def _every_row(result: ValidationResult, batch_reasons: list[str]) -> pa.Table:
    """Every row tagged with the batch's reasons, then its own."""
    import pyarrow as pa
    import pyarrow.compute as pc

    assert result.valid is not None and result.invalid is not None
    prefix = REASON_SEPARATOR.join(batch_reasons)
    valid = result.valid.append_column(
        REASON_COLUMN, pa.repeat(pa.scalar(prefix, pa.string()), result.valid.num_rows)
    )
    own = pc.binary_join_element_wise(
        prefix, result.invalid.column(REASON_COLUMN), REASON_SEPARATOR
    )
    invalid = result.invalid.set_column(
        result.invalid.schema.get_field_index(REASON_COLUMN), REASON_COLUMN, own
    )
    return pa.concat_tables([valid, invalid])
