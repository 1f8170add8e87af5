"""What a drift comparison found: per column, for the dataset, and as a check report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from conveyor.checks.result import CheckResult, Report
from conveyor.data.schema import SchemaChange

__all__ = ["JUDGMENTS", "ColumnDrift", "DriftResult"]

#: How many categories unseen in the reference a column result lists.
NEW_CATEGORIES_SHOWN = 20

#: What a column comparison concluded, from the strongest to the weakest:
#: ``drift`` (the effect is shown above its floor, or the missing rate moved),
#: ``significant_below_floor`` (a change is significant but not shown to reach
#: the floor: negligible, or too close to the floor to tell), ``no_drift``,
#: ``not_compared``.
JUDGMENTS = ("drift", "significant_below_floor", "no_drift", "not_compared")

_EFFECT_NAMES = {
    "ks": "ks_statistic",
    "chisquare": "cramers_v_corrected",
    "z": "log_odds_ratio",
    "psi": "psi",
    "jensenshannon": "jensenshannon_distance",
    "wasserstein": "wasserstein_normed",
}


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """One column compared against the reference.

    For p-value tests (ks, chisquare, z) ``threshold`` is ``alpha`` and the
    distribution drifted when ``p_value_adjusted < alpha`` (a change) **and**
    ``min_effect_p_value_adjusted < alpha`` (the minimum-effect test of
    ``H0: effect <= effect_size_floor``); both are corrected across columns.
    Equivalently, ``effect_size_lower``, the one-sided lower confidence bound
    of the effect at the level the correction leaves
    (``DriftResult.min_effect_level``), clears the floor. Significant but not
    shown above the floor is the judgment ``significant_below_floor``. For distances (psi,
    jensenshannon, wasserstein) ``p_value`` is None and it drifted when
    ``statistic >= threshold``. ``test`` is None when the distribution was
    not compared (``detail`` says why).

    Missing rates (null, NaN, +-inf) and outlier rates (outside the
    reference's 1.5 IQR fences, numeric columns) are known for the compared
    columns; ``*_changed`` is a two-proportion z-test, corrected across
    columns, whose log odds ratio is shown above the z floor. A changed
    missing rate is drift of the column: ``drifted`` is true and
    ``drifted_by`` lists ``"distribution"``, ``"missing_rate"`` or both.
    ``important`` columns fail the report when they drift.
    """

    column: str
    test: str | None
    statistic: float | None = None
    p_value: float | None = None
    p_value_adjusted: float | None = None
    min_effect_p_value_adjusted: float | None = None
    effect_size: float | None = None
    effect_size_lower: float | None = None
    threshold: float | None = None
    effect_size_floor: float | None = None
    drifted: bool = False
    drifted_by: tuple[str, ...] = ()
    judgment: str = "not_compared"
    important: bool = False
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
        """The distribution was compared (a statistic was computed)."""
        return self.statistic is not None

    @property
    def compared(self) -> bool:
        """The distribution or the missing rate was compared: the column counts in the share."""
        return self.tested or self.missing_rate_current is not None

    @property
    def near_floor(self) -> bool:
        """Significant, estimated at or above the floor, but not shown above it."""
        return (
            self.judgment == "significant_below_floor"
            and self.effect_size is not None
            and self.effect_size_floor is not None
            and self.effect_size >= self.effect_size_floor
        )

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
            "min_effect_p_value_adjusted": _num(self.min_effect_p_value_adjusted),
            "effect_size": _num(self.effect_size),
            "effect_size_lower": _num(self.effect_size_lower),
            "effect_size_name": self.effect_size_name,
            "threshold": _num(self.threshold),
            "effect_size_floor": _num(self.effect_size_floor),
            "drifted": self.drifted,
            "drifted_by": list(self.drifted_by),
            "judgment": self.judgment,
            "important": self.important,
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
        """This column as a check.

        It passes on ``no_drift`` and ``not_compared``; ``drift`` and
        ``significant_below_floor`` fail it, at severity ``error`` only for
        a drifted ``important`` column (which fails the report), at
        ``warning`` otherwise. ``observed`` is ``{"judgment", "effect_size",
        "effect_size_lower", "near_floor", "important"}`` (the effect against its floor for
        a p-value test, the distance for a distance test) and ``threshold``
        the floor or distance threshold it is held to; to_dict() has it all.
        """
        if self.p_value_adjusted is not None:
            observed, threshold = self.effect_size, self.effect_size_floor
        else:
            observed, threshold = self.statistic, self.threshold
        return CheckResult(
            f"drift.column.{self.column}",
            self.judgment in ("no_drift", "not_compared"),
            observed={
                "judgment": self.judgment,
                "effect_size": _num(observed) if self.tested else None,
                "effect_size_lower": _num(self.effect_size_lower),
                "near_floor": self.near_floor,
                "important": self.important,
            },
            threshold=threshold if self.tested else None,
            detail=self.describe(),
            severity="error" if self.important and self.drifted else "warning",
        )

    def describe(self) -> str:
        missing = self._describe_missing()
        if not self.tested:
            if self.drifted:
                return f"drifted: {missing} ({self.detail})"
            return f"not compared: {self.detail}"
        parts = [f"{self.test} {self.statistic:.4g}"]
        if self.p_value_adjusted is not None:
            parts.append(f"adjusted p {self.p_value_adjusted:.3g}")
        if self.effect_size is not None and self.test in ("ks", "chisquare", "z"):
            effect = f"{self.effect_size_name} {self.effect_size:.3g}"
            if self.effect_size_lower is not None and self.effect_size_floor is not None:
                effect += (
                    f", lower bound {self.effect_size_lower:.3g} vs floor "
                    f"{self.effect_size_floor:.3g}"
                )
            parts.append(effect)
        if "distribution" in self.drifted_by:
            verdict = "drifted"
        elif self.near_floor:
            verdict = (
                "significant, near the floor (the estimate reaches it, its lower "
                "confidence bound does not: not counted as drift)"
            )
        elif self.p_value_adjusted is not None and self.p_value_adjusted < (self.threshold or 0):
            verdict = "significant, below the floor (negligible: not counted as drift)"
        else:
            verdict = "no drift"
        text = f"{verdict} ({', '.join(parts)})"
        if self.drifted_by == ("missing_rate",):
            text = f"drifted: {missing}; distribution: {text}"
        elif missing:
            text += f"; {missing}"
        if self.new_categories_count:
            shown = ", ".join(repr(v) for v in self.new_categories[:5])
            more = self.new_categories_count - min(5, len(self.new_categories))
            text += f"; {self.new_categories_count} categories unseen in the reference: {shown}"
            text += f" and {more} more" if more > 0 else ""
        return text

    def _describe_missing(self) -> str:
        if not self.missing_rate_changed:
            return ""
        return (
            f"missing values {_pct(self.missing_rate_reference)} in the reference, "
            f"{_pct(self.missing_rate_current)} now"
        )


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
    important: tuple[str, ...] = ()
    #: The one-sided level of the columns' ``effect_size_lower``: alpha, or what the
    #: Benjamini-Hochberg correction of the minimum-effect tests leaves each column.
    min_effect_level: float | None = None

    @property
    def drifted_columns(self) -> list[str]:
        return [name for name, col in self.columns.items() if col.drifted]

    @property
    def important_drifted(self) -> list[str]:
        """Drifted columns marked important: each one fails the report."""
        return [name for name, col in self.columns.items() if col.drifted and col.important]

    @property
    def below_floor_columns(self) -> list[str]:
        """Columns whose change is significant but not shown to reach the floor."""
        return [
            name for name, col in self.columns.items() if col.judgment == "significant_below_floor"
        ]

    @property
    def alarm(self) -> bool:
        """The report fails on drift: dataset drift, or an important column drifted."""
        return self.dataset_drift or bool(self.important_drifted)

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
            "important": list(self.important),
            "important_drifted": self.important_drifted,
            "below_floor_columns": self.below_floor_columns,
            "alarm": self.alarm,
            "tested_columns": len(self.tested_columns),
            "compared_columns": sum(c.compared for c in self.columns.values()),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "alpha": self.alpha,
            "correction": self.correction,
            "min_effect_level": _num(self.min_effect_level),
            "tests": dict(self.tests),
            "schema": self.schema.to_dict(),
            "columns": {name: col.to_dict() for name, col in self.columns.items()},
        }

    def to_report(self, subject: str) -> Report:
        """A ``drift`` report: the dataset check, the schema checks, then one check per column.

        The report fails when the dataset drifted (the share of drifted
        columns reached ``drift_share``), when an ``important`` column drifted
        (its column check is an error), or when a column was removed or
        retyped. Other drifted columns, columns significant but below their
        floor (judgment ``significant_below_floor``) and changed missing or
        outlier rates are warnings.
        """
        drifted = self.drifted_columns
        compared = sum(c.compared for c in self.columns.values())
        listing = f": {', '.join(drifted[:10])}{' ...' if len(drifted) > 10 else ''}"
        detail = (
            f"{len(drifted)} of {compared} compared columns drifted "
            f"({self.share:.0%}; dataset drift at {self.drift_share:.0%})"
            + (listing if drifted else "")
        )
        if self.important:
            hit = self.important_drifted
            detail += (
                f"; important columns drifted: {', '.join(hit)}"
                if hit
                else f"; none of the {len(self.important)} important columns drifted"
            )
        below = self.below_floor_columns
        if below:
            detail += f"; {len(below)} significant but below the floor"
        checks = [
            CheckResult(
                "drift.dataset",
                not self.dataset_drift,
                observed=self.share,
                threshold=self.drift_share,
                detail=detail,
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
