"""What a drift comparison found: per column, for the dataset, and as a check report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from conveyor.checks.result import CheckResult, Report
from conveyor.data.schema import SchemaChange

__all__ = ["ColumnDrift", "DriftResult"]

#: How many categories unseen in the reference a column result lists.
NEW_CATEGORIES_SHOWN = 20

_EFFECT_NAMES = {
    "ks": "ks_statistic",
    "chisquare": "cramers_v_balanced",
    "z": "cohens_h",
    "psi": "psi",
    "jensenshannon": "jensenshannon_distance",
    "wasserstein": "wasserstein_normed",
}


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """One column compared against the reference.

    For p-value tests (ks, chisquare, z) ``threshold`` is ``alpha`` and the
    column drifted when ``p_value_adjusted < alpha`` **and** ``effect_size >=
    effect_size_floor``; for distances (psi, jensenshannon, wasserstein)
    ``p_value`` is None and it drifted when ``statistic >= threshold``.
    ``test`` is None when the column was not compared (``detail`` says why).
    Missing rates (null, NaN, +-inf) and outlier rates (outside the
    reference's 1.5 IQR fences, numeric columns) are known for the compared
    columns; ``*_changed`` is a two-proportion z-test, corrected across
    columns, with Cohen's h at least the z floor.
    """

    column: str
    test: str | None
    statistic: float | None = None
    p_value: float | None = None
    p_value_adjusted: float | None = None
    effect_size: float | None = None
    threshold: float | None = None
    effect_size_floor: float | None = None
    drifted: bool = False
    reference_values: int = 0
    current_values: int = 0
    missing_rate_reference: float | None = None
    missing_rate_current: float | None = None
    missing_rate_changed: bool = False
    outlier_rate_reference: float | None = None
    outlier_rate_current: float | None = None
    outlier_rate_changed: bool = False
    new_categories: tuple[Any, ...] = ()
    new_categories_count: int = 0
    detail: str = ""

    @property
    def tested(self) -> bool:
        return self.statistic is not None

    @property
    def effect_size_name(self) -> str | None:
        return _EFFECT_NAMES.get(self.test or "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "test": self.test,
            "statistic": _num(self.statistic),
            "p_value": _num(self.p_value),
            "p_value_adjusted": _num(self.p_value_adjusted),
            "effect_size": _num(self.effect_size),
            "effect_size_name": self.effect_size_name,
            "threshold": _num(self.threshold),
            "effect_size_floor": _num(self.effect_size_floor),
            "drifted": self.drifted,
            "reference_values": self.reference_values,
            "current_values": self.current_values,
            "missing_rate": {
                "reference": _num(self.missing_rate_reference),
                "current": _num(self.missing_rate_current),
                "changed": self.missing_rate_changed,
            },
            "outlier_rate": {
                "reference": _num(self.outlier_rate_reference),
                "current": _num(self.outlier_rate_current),
                "changed": self.outlier_rate_changed,
            },
            "new_categories": [_plain(v) for v in self.new_categories],
            "new_categories_count": self.new_categories_count,
            "detail": self.detail,
        }

    def check(self) -> CheckResult:
        """This column as a warning-level check: one column drifting does not fail a report."""
        # One number against one bound, as every check shows them: the effect size
        # against its floor for a p-value test (the p-value is in the detail), the
        # distance against its threshold for a distance test. to_dict() has it all.
        if self.p_value_adjusted is not None:
            observed, threshold = self.effect_size, self.effect_size_floor
        else:
            observed, threshold = self.statistic, self.threshold
        return CheckResult(
            f"drift.column.{self.column}",
            not self.drifted,
            observed=observed if self.tested else None,
            threshold=threshold if self.tested else None,
            detail=self.describe(),
            severity="warning",
        )

    def describe(self) -> str:
        if not self.tested:
            return f"not compared: {self.detail}"
        parts = [f"{self.test} {self.statistic:.4g}"]
        if self.p_value_adjusted is not None:
            parts.append(f"adjusted p {self.p_value_adjusted:.3g}")
        if self.effect_size is not None and self.test in ("ks", "chisquare", "z"):
            parts.append(f"{self.effect_size_name} {self.effect_size:.3g}")
        verdict = "drifted" if self.drifted else "no drift"
        text = f"{verdict} ({', '.join(parts)})"
        if self.new_categories_count:
            shown = ", ".join(repr(v) for v in self.new_categories[:5])
            more = self.new_categories_count - min(5, len(self.new_categories))
            text += f"; {self.new_categories_count} categories unseen in the reference: {shown}"
            text += f" and {more} more" if more > 0 else ""
        return text


@dataclass(frozen=True, slots=True)
class DriftResult:
    """Every column's comparison, the schema change and the dataset-level verdict."""

    columns: dict[str, ColumnDrift]
    schema: SchemaChange
    share: float
    drift_share: float
    dataset_drift: bool
    reference_rows: int
    current_rows: int
    alpha: float
    correction: str | None
    tests: dict[str, int] = field(default_factory=dict)

    @property
    def drifted_columns(self) -> list[str]:
        return [name for name, col in self.columns.items() if col.drifted]

    @property
    def tested_columns(self) -> list[str]:
        return [name for name, col in self.columns.items() if col.tested]

    def __getitem__(self, column: str) -> ColumnDrift:
        return self.columns[column]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (NaN and infinities become null)."""
        return {
            "dataset_drift": self.dataset_drift,
            "share": _num(self.share),
            "drift_share": self.drift_share,
            "drifted_columns": self.drifted_columns,
            "tested_columns": len(self.tested_columns),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "alpha": self.alpha,
            "correction": self.correction,
            "tests": dict(self.tests),
            "schema": self.schema.to_dict(),
            "columns": {name: col.to_dict() for name, col in self.columns.items()},
        }

    def to_report(self, subject: str) -> Report:
        """A ``drift`` report: the dataset check, the schema checks, then one check per column.

        Only the dataset-level check and a removed or retyped column fail
        the report; drifted columns and changed missing or outlier rates are
        warnings.
        """
        drifted = self.drifted_columns
        tested = len(self.tested_columns)
        listing = f": {', '.join(drifted[:10])}{' ...' if len(drifted) > 10 else ''}"
        checks = [
            CheckResult(
                "drift.dataset",
                not self.dataset_drift,
                observed=self.share,
                threshold=self.drift_share,
                detail=f"{len(drifted)} of {tested} compared columns drifted "
                f"({self.share:.0%}; dataset drift at {self.drift_share:.0%})"
                + (listing if drifted else ""),
            ),
            *self.schema.checks(),
        ]
        for col in self.columns.values():
            checks.append(col.check())
            if col.missing_rate_changed:
                checks.append(
                    _rate_check(
                        "missing_rate", col, col.missing_rate_reference, col.missing_rate_current
                    )
                )
            if col.outlier_rate_changed:
                checks.append(
                    _rate_check(
                        "outlier_rate", col, col.outlier_rate_reference, col.outlier_rate_current
                    )
                )
        return Report.of(subject, checks, kind="drift")


def _rate_check(
    what: str, col: ColumnDrift, reference: float | None, current: float | None
) -> CheckResult:
    label = "missing values" if what == "missing_rate" else "outliers (reference IQR fences)"
    return CheckResult(
        f"drift.{what}.{col.column}",
        False,
        observed=current,
        threshold=reference,
        detail=f"{label}: {_pct(reference)} in the reference, {_pct(current)} now",
        severity="warning",
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _num(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return _num(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)
