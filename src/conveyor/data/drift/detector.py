"""``DriftDetector``: fit on a reference, score current data against it.

The scikit-learn estimator contract: ``__init__`` only stores parameters,
``fit(reference)`` validates them, learns and returns ``self``; learned state
ends in ``_``; ``score`` before ``fit`` raises :class:`NotFittedError`.
The rule for choosing tests and the thresholds are documented in
:mod:`conveyor.data.drift`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.errors import InvalidInputError, NotFittedError

if TYPE_CHECKING:
    from conveyor.data.drift.columns import ColumnModel, ColumnScore
    from conveyor.data.drift.result import ColumnDrift, DriftResult
    from conveyor.data.drift.source import TableSource
    from conveyor.data.drift.spill import SortedSpill

__all__ = ["DEFAULT_EFFECT_SIZE_FLOORS", "DEFAULT_THRESHOLDS", "TESTS", "DriftDetector"]

TESTS = ("ks", "chisquare", "z", "psi", "jensenshannon", "wasserstein")
P_VALUE_TESTS = ("ks", "chisquare", "z")

#: Smallest effect a p-value test may alarm on, per test family (see the package docstring).
DEFAULT_EFFECT_SIZE_FLOORS: dict[str, float] = {"ks": 0.02, "chisquare": 0.025, "z": 0.04}
#: Distance at or above which a distance-only test alarms (Evidently's defaults).
DEFAULT_THRESHOLDS: dict[str, float] = {"psi": 0.1, "jensenshannon": 0.1, "wasserstein": 0.1}
#: Evidently divides the Wasserstein distance by max(reference std, 0.001).
WASSERSTEIN_STD_FLOOR = 0.001

T = TypeVar("T")
R = TypeVar("R")


class DriftDetector:
    """Per-column drift tests with a dataset-level verdict.

    Parameters
    ----------
    columns:
        Columns to compare; None compares every column of the reference.
    tests:
        ``"auto"`` (the default rule), one test name for every column, or a
        mapping ``{column: test}`` (unlisted columns use the rule). Tests:
        ``ks``, ``chisquare``, ``z``, ``psi``, ``jensenshannon``, ``wasserstein``.
    alpha:
        Significance level of the p-value tests, after the correction.
    correction:
        ``"bh"`` (Benjamini-Hochberg across the columns' p-values) or None.
    effect_size_floor:
        Per p-value test, the smallest effect that counts as drift; merged
        over :data:`DEFAULT_EFFECT_SIZE_FLOORS` (pass 0 to switch one off).
        A column drifts only when the one-sided ``1 - alpha`` lower
        confidence bound of its effect is above the floor (the
        minimum-effect test), not merely its estimate.
    thresholds:
        Per distance test, the distance that counts as drift; merged over
        :data:`DEFAULT_THRESHOLDS`.
    drift_share:
        The dataset drifted when at least this share of compared columns did.
    important:
        Columns whose drift alone fails the report (see
        :meth:`DriftResult.to_report`), such as a model's most important
        features (:func:`conveyor.data.drift.importance.important_features`).
    bins:
        Reference-quantile bins for ``psi`` and ``jensenshannon`` on a
        continuous numeric column.
    chunk_rows:
        Rows per chunk when counting values, which bounds the memory of
        counted columns.
    max_categories:
        A string column with more distinct reference values than this is
        an identifier or free text and is not compared (unless a test is
        named for it).
    n_jobs:
        Columns compared at once (threads; the numeric work releases the
        GIL). None: one per available CPU, at most 4.
    """

    # Learned state (set by fit).
    columns_: dict[str, ColumnModel]
    reference_: TableSource
    spill_: SortedSpill
    schema_: dict[str, Any]
    n_reference_rows_: int
    effect_size_floor_: dict[str, float]
    thresholds_: dict[str, float]
    important_: tuple[str, ...]

    def __init__(
        self,
        columns: Sequence[str] | None = None,
        tests: str | Mapping[str, str] = "auto",
        alpha: float = 0.05,
        correction: str | None = "bh",
        effect_size_floor: Mapping[str, float] | None = None,
        thresholds: Mapping[str, float] | None = None,
        drift_share: float = 0.5,
        important: Sequence[str] | None = None,
        bins: int = 20,
        chunk_rows: int = 1 << 20,
        max_categories: int = 1_000,
        n_jobs: int | None = None,
    ) -> None:
        self.columns = columns
        self.tests = tests
        self.alpha = alpha
        self.correction = correction
        self.effect_size_floor = effect_size_floor
        self.thresholds = thresholds
        self.drift_share = drift_share
        self.important = important
        self.bins = bins
        self.chunk_rows = chunk_rows
        self.max_categories = max_categories
        self.n_jobs = n_jobs

    def __repr__(self) -> str:
        return f"DriftDetector(columns={self.columns!r}, tests={self.tests!r}, alpha={self.alpha})"

    # -- parameters -------------------------------------------------------------

    def _validate_params(self) -> None:
        """Every parameter checked in one place, each error naming its field."""
        _check(0.0 < _number(self.alpha, "alpha") < 1.0, "alpha", "between 0 and 1", self.alpha)
        _check(
            0.0 < _number(self.drift_share, "drift_share") <= 1.0,
            "drift_share",
            "in (0, 1]",
            self.drift_share,
        )
        _check(self.correction in ("bh", None), "correction", '"bh" or None', self.correction)
        for name in ("bins", "chunk_rows", "max_categories"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 2, name, "an integer >= 2", value)
        if self.n_jobs is not None:
            _check(isinstance(self.n_jobs, int) and self.n_jobs >= 1, "n_jobs", ">= 1", self.n_jobs)
        if isinstance(self.tests, str):
            _check(self.tests in ("auto", *TESTS), "tests", f"auto or one of {TESTS}", self.tests)
        elif isinstance(self.tests, Mapping):
            for column, test in self.tests.items():
                _check(test in ("auto", *TESTS), f"tests[{column!r}]", f"one of {TESTS}", test)
        else:
            raise InvalidInputError(
                f"tests must be 'auto', a test name or a mapping column -> test, "
                f"got {type(self.tests).__name__}",
                field="tests",
            )
        for field, given, known in (
            ("effect_size_floor", self.effect_size_floor, P_VALUE_TESTS),
            ("thresholds", self.thresholds, tuple(DEFAULT_THRESHOLDS)),
        ):
            for test, value in (given or {}).items():
                _check(test in known, f"{field}[{test!r}]", f"a key among {known}", test)
                _check(_number(value, field) >= 0.0, f"{field}[{test!r}]", ">= 0", value)
        if self.columns is not None:
            _check(
                not isinstance(self.columns, str) and len(self.columns) > 0,
                "columns",
                "a non-empty list of column names",
                self.columns,
            )
        if self.important is not None:
            _check(
                not isinstance(self.important, str)
                and all(isinstance(c, str) for c in self.important),
                "important",
                "a list of column names",
                self.important,
            )

    def _requested(self, column: str) -> str | None:
        test = self.tests.get(column, "auto") if isinstance(self.tests, Mapping) else self.tests
        return None if test == "auto" else test

    # -- fit and score ----------------------------------------------------------

    def fit(self, reference: Any) -> DriftDetector:
        """Learn the reference: a pyarrow Table, a pandas/polars frame or a Parquet path."""
        from conveyor.data.drift.columns import fit_column, kind_of
        from conveyor.data.drift.source import TableSource
        from conveyor.data.drift.spill import SortedSpill
        from conveyor.data.schema import schema_of

        self._validate_params()
        source = TableSource.open(reference, role="reference")
        if source.num_rows == 0:
            raise InvalidInputError(
                f"the reference ({source.where}) has no rows: nothing to compare against",
                field="reference",
            )
        names = list(self.columns) if self.columns is not None else source.names
        absent = [c for c in names if c not in source.schema.names]
        if isinstance(self.tests, Mapping):
            absent += [c for c in self.tests if c not in names and c not in absent]
        if absent:
            raise InvalidInputError(
                f"column(s) {', '.join(map(repr, absent))} not in the reference ({source.where}); "
                f"it has {', '.join(source.names)}",
                field="columns",
                columns=absent,
            )
        unknown = [c for c in self.important or () if c not in names]
        if unknown:
            raise InvalidInputError(
                f"important column(s) {', '.join(map(repr, unknown))} are not compared; "
                f"the compared columns are {', '.join(names)}",
                field="important",
                columns=unknown,
            )
        for name in names:
            requested = self._requested(name)
            kind = kind_of(source.schema.field(name).type)
            if requested in ("ks", "wasserstein") and kind != "numeric":
                raise InvalidInputError(
                    f"column {name!r} ({source.schema.field(name).type}): the {requested} test "
                    "needs a numeric column",
                    field="tests",
                    column=name,
                )
            if requested is not None and kind is None:
                raise InvalidInputError(
                    f"column {name!r} ({source.schema.field(name).type}) cannot be tested",
                    field="tests",
                    column=name,
                )

        if hasattr(self, "spill_"):
            self.spill_.remove()  # a refit replaces what the last fit stored
        spill = SortedSpill()

        def fit_one(name: str) -> ColumnModel:
            return fit_column(
                source,
                name,
                self._requested(name),
                bins=self.bins,
                chunk_rows=self.chunk_rows,
                max_categories=self.max_categories,
                spill=spill,
            )

        models = self._map(fit_one, names)
        for model in models:
            if model.test in ("chisquare", "z") and model.distinct > self.max_categories:
                raise InvalidInputError(
                    f"column {model.name!r} has {model.distinct:,} distinct values: the "
                    f"{model.test} test compares counts of values (at most max_categories="
                    f"{self.max_categories:,}); use ks, or psi/jensenshannon on binned values",
                    field="tests",
                    column=model.name,
                )
            if model.test == "z" and model.distinct > 2:
                raise InvalidInputError(
                    f"column {model.name!r} has {model.distinct} distinct values: the z test "
                    "compares two proportions and needs at most 2 (use chisquare)",
                    field="tests",
                    column=model.name,
                )
        self.columns_ = {m.name: m for m in models}
        self.reference_ = source
        self.spill_ = spill
        self.schema_ = schema_of(source.schema)
        self.n_reference_rows_ = source.num_rows
        self.effect_size_floor_ = {**DEFAULT_EFFECT_SIZE_FLOORS, **(self.effect_size_floor or {})}
        self.thresholds_ = {**DEFAULT_THRESHOLDS, **(self.thresholds or {})}
        self.important_ = tuple(dict.fromkeys(self.important or ()))
        return self

    def score(self, current: Any) -> DriftResult:
        """Compare ``current`` (same kinds of input as ``fit``) against the reference."""
        from conveyor.data.drift.columns import score_column
        from conveyor.data.drift.source import TableSource
        from conveyor.data.schema import diff_schema, schema_of

        self._check_fitted()
        source = TableSource.open(current, role="current")
        if source.num_rows == 0:
            raise InvalidInputError(
                f"the current data ({source.where}) has no rows: nothing to compare",
                field="current",
            )
        self.reference_.verify()
        schema = diff_schema(self.schema_, schema_of(source.schema))

        def score_one(model: ColumnModel) -> ColumnScore:
            return score_column(
                model,
                self.reference_,
                source,
                chunk_rows=self.chunk_rows,
                wasserstein_floor=WASSERSTEIN_STD_FLOOR,
            )

        # Exact numeric columns first: they are the long tasks, and starting
        # them early keeps both threads busy to the end.
        models = sorted(self.columns_.values(), key=lambda m: m.test not in ("ks", "wasserstein"))
        scores = {s.model.name: s for s in self._map(score_one, models)}
        return self._decide([scores[name] for name in self.columns_], schema, source.num_rows)

    def fit_score(self, reference: Any, current: Any) -> DriftResult:
        return self.fit(reference).score(current)

    def _check_fitted(self) -> None:
        if not hasattr(self, "columns_"):
            raise NotFittedError(
                "this DriftDetector is not fitted yet: call fit(reference) before score(current)",
                estimator="DriftDetector",
            )

    def _map(self, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
        jobs = self.n_jobs or min(4, len(os.sched_getaffinity(0)))
        items = list(items)
        if jobs == 1 or len(items) <= 1:
            return [work(item) for item in items]
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="conveyor-drift") as pool:
            return list(pool.map(work, items))

    # -- the verdict ------------------------------------------------------------

    def _decide(self, scores: list[ColumnScore], schema: Any, current_rows: int) -> DriftResult:
        import numpy as np

        from conveyor.data.drift.result import DriftResult
        from conveyor.data.drift.stats import bh_level, min_effect_p_value

        # Two families of p-values over the p-value tests, each corrected the same way:
        # "did it change?" (H0: no change) and the minimum-effect test (H0: effect <=
        # floor). A column drifts when both reject; significant alone is below the floor.
        with_p = [s for s in scores if s.outcome is not None and s.outcome.p_value is not None]
        raw = np.array([s.outcome.p_value for s in with_p if s.outcome], dtype=np.float64)
        raw_floor = np.array(
            [
                self._floor_p(min_effect_p_value, s.test or "", s.outcome, s.model.values, s.values)
                for s in with_p
                if s.outcome
            ],
            dtype=np.float64,
        )
        adjusted, adjusted_floor = self._adjust(raw), self._adjust(raw_floor)
        level = bh_level(adjusted_floor, self.alpha) if self.correction == "bh" else self.alpha
        corrected = {
            s.model.name: (float(p), float(f))
            for s, p, f in zip(with_p, adjusted, adjusted_floor, strict=True)
        }

        # Missing and outlier rates: two-proportion z-tests, corrected together, judged
        # on the log odds ratio like a binary column (floor and minimum-effect test).
        rate_tests: list[tuple[str, str, float, float]] = []
        for s in scores:
            m = s.model
            if not s.counted:
                continue  # not compared (absent, retyped, not a testable type): no rates
            missing = self._rate(m.missing, m.rows, s.missing, s.rows)
            rate_tests.append(("missing", m.name, *missing))
            if s.outliers is not None and m.values and s.values:
                rate_tests.append(
                    ("outlier", m.name, *self._rate(m.outliers, m.values, s.outliers, s.values))
                )
        rate_p = self._adjust(np.array([t[2] for t in rate_tests], dtype=np.float64))
        rate_floor = self._adjust(np.array([t[3] for t in rate_tests], dtype=np.float64))
        rates: dict[tuple[str, str], str] = {}
        for (what, name, _, _), p, f in zip(rate_tests, rate_p, rate_floor, strict=True):
            if p < self.alpha:
                rates[(what, name)] = "drift" if f < self.alpha else "significant_below_floor"
        columns = {
            s.model.name: self._column(s, corrected.get(s.model.name), level, rates) for s in scores
        }
        compared = [c for c in columns.values() if c.compared]
        share = sum(c.drifted for c in compared) / len(compared) if compared else 0.0
        counts: dict[str, int] = {}
        for c in columns.values():
            if c.tested:
                counts[c.test or ""] = counts.get(c.test or "", 0) + 1
        return DriftResult(
            columns=columns,
            schema=schema,
            share=share,
            drift_share=self.drift_share,
            dataset_drift=bool(compared) and share >= self.drift_share,
            reference_rows=self.n_reference_rows_,
            current_rows=current_rows,
            alpha=self.alpha,
            correction=self.correction,
            tests=counts,
            important=self._important(),
            min_effect_level=level,
        )

    def _important(self) -> tuple[str, ...]:
        # A detector pickled before important_ existed has none.
        return getattr(self, "important_", ())

    def _adjust(self, p_values: Any) -> Any:
        from conveyor.data.drift.stats import bh_adjust

        return bh_adjust(p_values) if self.correction == "bh" else p_values

    def _floor_p(self, test_p: Any, test: str, outcome: Any, n_ref: int, n_cur: int) -> float:
        """The minimum-effect p-value; with the floor off (0), the plain p-value."""
        floor = self.effect_size_floor_.get(test, 0.0)
        if floor <= 0.0:
            return float(outcome.p_value)
        p = test_p(test, outcome, n_ref, n_cur, floor)
        return 1.0 if p is None else float(p)

    def _rate(self, hits_ref: int, n_ref: int, hits_cur: int, n_cur: int) -> tuple[float, float]:
        """(p-value, minimum-effect p-value on the log odds ratio) of a rate change.

        No data on a side means no evidence (p = 1).
        """
        from conveyor.data.drift.stats import min_effect_p_value, z_two_proportions

        if n_ref == 0 or n_cur == 0:
            return 1.0, 1.0
        outcome = z_two_proportions(hits_ref, n_ref, hits_cur, n_cur)
        p = 1.0 if outcome.p_value is None else outcome.p_value  # 0.0 is a p-value too
        return float(p), self._floor_p(min_effect_p_value, "z", outcome, n_ref, n_cur)

    def _column(
        self,
        s: ColumnScore,
        corrected: tuple[float, float] | None,
        level: float,
        rates: dict[tuple[str, str], str],
    ) -> ColumnDrift:
        from conveyor.data.drift.result import NEW_CATEGORIES_SHOWN, ColumnDrift
        from conveyor.data.drift.stats import effect_lower_bound

        m = s.model
        missing = rates.get(("missing", m.name))
        known: dict[str, Any] = {
            "missing_rate_reference": m.missing / m.rows if m.rows else None,
            "missing_rate_current": s.missing / s.rows if s.rows and s.counted else None,
            "missing_rate_changed": missing == "drift",
            "reference_values": m.values,
            "current_values": s.values,
            "important": m.name in self._important(),
        }
        if s.outliers is not None:
            known["outlier_rate_reference"] = m.outliers / m.values if m.values else None
            known["outlier_rate_current"] = s.outliers / s.values if s.values else None
            known["outlier_rate_changed"] = rates.get(("outlier", m.name)) == "drift"
        drifted_by: list[str] = []
        if s.outcome is None or s.test is None:
            judgment = _judgment(None, missing, counted=s.counted)
            if missing == "drift":
                drifted_by.append("missing_rate")
            return ColumnDrift(
                m.name,
                None,
                detail=s.reason,
                drifted=bool(drifted_by),
                drifted_by=tuple(drifted_by),
                judgment=judgment,
                **known,
            )
        outcome = s.outcome
        lower: float | None = None
        adjusted = floor_adjusted = None
        if outcome.p_value is not None and corrected is not None:
            adjusted, floor_adjusted = corrected
            floor = self.effect_size_floor_[s.test]
            # Read with the decision: the bound at the level the correction leaves.
            lower = effect_lower_bound(s.test, outcome, m.values, s.values, level)
            significant = adjusted < self.alpha
            # The minimum-effect test: the effect must be shown above the floor, not
            # merely estimated above it.
            above = floor_adjusted < self.alpha
            distribution = (
                "drift"
                if significant and above
                else "significant_below_floor"
                if significant
                else "no_drift"
            )
            threshold: float | None = self.alpha
        else:
            floor, threshold = None, self.thresholds_[s.test]
            distribution = "drift" if outcome.statistic >= threshold else "no_drift"
        if distribution == "drift":
            drifted_by.append("distribution")
        if missing == "drift":
            drifted_by.append("missing_rate")
        return ColumnDrift(
            m.name,
            s.test,
            statistic=outcome.statistic,
            p_value=outcome.p_value,
            p_value_adjusted=adjusted,
            min_effect_p_value_adjusted=floor_adjusted,
            effect_size=outcome.effect_size,
            effect_size_lower=lower,
            threshold=threshold,
            effect_size_floor=floor,
            drifted=bool(drifted_by),
            drifted_by=tuple(drifted_by),
            judgment=_judgment(distribution, missing, counted=True),
            new_categories=tuple(s.new_categories[:NEW_CATEGORIES_SHOWN]),
            new_categories_count=len(s.new_categories),
            **known,
        )


def _judgment(distribution: str | None, missing: str | None, *, counted: bool) -> str:
    """One word for the column: its distribution's verdict and its missing rate's together."""
    verdicts = {distribution, missing}
    if "drift" in verdicts:
        return "drift"
    if "significant_below_floor" in verdicts:
        return "significant_below_floor"
    if distribution is None and not counted:
        return "not_compared"
    return "no_drift"


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{name} must be a number, got {value!r}", field=name)
    return float(value)


def _check(ok: bool, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise InvalidInputError(f"{name} must be {expected}, got {value!r}", field=name)
