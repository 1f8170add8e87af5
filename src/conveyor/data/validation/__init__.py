"""Validation: declarative expectations run in DuckDB, with failing rows split off.

::

    from conveyor.data.validation import parse_expectations, validate

    expectations = parse_expectations(spec["expectations"], where="datasets.tx.expectations")
    result = validate("tx.parquet", expectations, subject="dataset:tx")
    result.report          # one CheckResult per expectation
    result.valid           # rows passing every row-level expectation
    result.invalid         # the others, with _quarantine_reason

Importing this package loads pydantic only; DuckDB and pyarrow are imported
when :func:`validate` runs.
"""

from conveyor.data.validation.engine import validate
from conveyor.data.validation.expectations import (
    BATCH_KINDS,
    EXPECTATION_KINDS,
    ROW_KINDS,
    Between,
    ColumnSpec,
    Custom,
    Expectation,
    Freshness,
    InSet,
    MatchesRegex,
    NotNull,
    RowCount,
    RowExpectation,
    Schema,
    Unique,
    parse_duration,
    parse_expectations,
)
from conveyor.data.validation.policy import (
    BATCH_REJECTED,
    POLICIES,
    Policy,
    PolicyDecision,
    apply_policy,
)
from conveyor.data.validation.result import REASON_COLUMN, REASON_SEPARATOR, ValidationResult

__all__ = [
    "BATCH_KINDS",
    "BATCH_REJECTED",
    "EXPECTATION_KINDS",
    "POLICIES",
    "REASON_COLUMN",
    "REASON_SEPARATOR",
    "ROW_KINDS",
    "Between",
    "ColumnSpec",
    "Custom",
    "Expectation",
    "Freshness",
    "InSet",
    "MatchesRegex",
    "NotNull",
    "Policy",
    "PolicyDecision",
    "RowCount",
    "RowExpectation",
    "Schema",
    "Unique",
    "ValidationResult",
    "apply_policy",
    "parse_duration",
    "parse_expectations",
    "validate",
]
