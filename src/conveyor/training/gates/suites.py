"""Gates beyond one metric: a regression suite, a latency budget, the training data's checks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conveyor.checks.result import CheckResult, Report
from conveyor.errors import InvalidInputError
from conveyor.training.gates.context import GateContext

if TYPE_CHECKING:
    from conveyor.data.validation.result import ValidationResult

__all__ = ["data_checks", "latency_budget", "regression_suite"]


def regression_suite(
    examples: Any,
    *,
    expected: str = "expected",
    tolerance: str = "tolerance",
    default_tolerance: float = 0.0,
    features: list[str] | None = None,
    row_names: str | None = None,
    max_listed: int = 10,
) -> Callable[[GateContext], CheckResult]:
    """A gate running curated examples through the model and comparing with expected outputs.

    ``examples`` is a table (pandas, polars, Arrow, or a dict of columns;
    for instance a dataset version read back) with feature columns, an
    ``expected`` column and an optional ``tolerance`` column (per row; a
    null uses ``default_tolerance``). Numeric outputs pass within the
    tolerance; other outputs must be equal. The model receives the feature
    columns in the kind of frame ``examples`` is. A failure names the
    failing rows (by position, or by the ``row_names`` column).
    """
    from conveyor.data.frames import from_arrow, kind_of, to_arrow

    table = to_arrow(examples)
    kind = kind_of(examples)
    columns = table.column_names
    if expected not in columns:
        raise InvalidInputError(
            f"the regression examples have no {expected!r} column (columns: {', '.join(columns)})",
            field="expected",
        )
    for column in [*(features or []), *([row_names] if row_names else [])]:
        if column not in columns:
            raise InvalidInputError(
                f"the regression examples have no column {column!r}", field="features"
            )
    if features is None:
        skip = {expected, tolerance, row_names}
        features = [c for c in columns if c not in skip]
    if not features:
        raise InvalidInputError("the regression examples have no feature column", field="features")
    if table.num_rows == 0:
        raise InvalidInputError("the regression suite has no examples", field="examples")
    X = from_arrow(table.select(features), kind)

    def regression_suite_gate(ctx: GateContext) -> CheckResult:
        import numpy as np
        import pyarrow as pa

        got = np.asarray(ctx.predict(ctx.model, X)).reshape(-1)
        n = table.num_rows
        if len(got) != n:
            raise InvalidInputError(
                f"the model returned {len(got)} outputs for {n} regression examples",
                field="predict",
            )
        want_col = table.column(expected)
        numeric = pa.types.is_integer(want_col.type) or pa.types.is_floating(want_col.type)
        if numeric or pa.types.is_boolean(want_col.type):
            want = want_col.to_numpy(zero_copy_only=False).astype(np.float64)
            tol = np.full(n, float(default_tolerance))
            if tolerance in columns:
                given = table.column(tolerance).to_numpy(zero_copy_only=False).astype(np.float64)
                tol = np.where(np.isnan(given), tol, given)
            diff = np.abs(got.astype(np.float64) - want)
            ok = diff <= tol + 1e-12 * np.abs(want)
        else:
            want = want_col.to_numpy(zero_copy_only=False).astype(str)
            ok = got.astype(str) == want
        failing = np.flatnonzero(~ok)
        names = (
            table.column(row_names).to_numpy(zero_copy_only=False).astype(str)
            if row_names
            else np.arange(n).astype(str)
        )
        if len(failing) == 0:
            detail = f"all {n} examples give their expected output"
        else:
            listed = ", ".join(
                f"row {names[i]} (expected {want[i]!r}, got {got[i]!r})"
                for i in failing[:max_listed]
            )
            more = f" and {len(failing) - max_listed} more" if len(failing) > max_listed else ""
            detail = f"{len(failing)} of {n} examples differ: {listed}{more}"
        return CheckResult(
            "regression_suite",
            len(failing) == 0,
            observed={"failed": len(failing), "rows": [str(names[i]) for i in failing]},
            threshold={"examples": n, "failed": 0},
            detail=detail,
        )

    return regression_suite_gate


def _row(X: Any, i: int) -> Any:
    """Row ``i`` of ``X`` as a one-row frame of the same kind."""
    module = type(X).__module__.split(".")[0]
    if module == "pandas":
        return X.iloc[i : i + 1]
    if module == "pyarrow":
        return X.slice(i, 1)
    if isinstance(X, list | tuple):
        return [X[i]]
    return X[i : i + 1]  # numpy, polars


def latency_budget(
    p95_ms: float | None = None, *, n_rows: int = 200, warmup: int = 10, seed: int = 0
) -> Callable[[GateContext], CheckResult]:
    """A gate timing single-row predictions (one thread, as a server runs) against a p95 budget.

    The budget is ``p95_ms`` or ``context.slos.latency_p95_ms``. ``n_rows``
    hold-out rows (drawn with ``seed``) are predicted one at a time after
    ``warmup`` untimed calls; BLAS/OpenMP pools are held to one thread.
    """
    if p95_ms is not None and (not isinstance(p95_ms, int | float) or not p95_ms > 0):
        raise InvalidInputError(f"p95_ms must be a number > 0, got {p95_ms!r}", field="p95_ms")
    if not isinstance(n_rows, int) or n_rows < 20:
        raise InvalidInputError(f"n_rows must be an integer >= 20, got {n_rows!r}", field="n_rows")

    def latency_budget_gate(ctx: GateContext) -> CheckResult:
        import numpy as np

        budget = p95_ms
        if budget is None:
            budget = ctx.slos.latency_p95_ms if ctx.slos is not None else None
            if budget is None:
                raise InvalidInputError(
                    "no latency budget: give latency_budget(p95_ms) or slos.latency_p95_ms",
                    field="slos.latency_p95_ms",
                )
        if ctx.holdout_X is None:
            raise InvalidInputError("the gate context has no holdout_X", field="holdout_X")
        total = len(ctx.holdout_X)
        rng = np.random.default_rng(seed)
        rows = [_row(ctx.holdout_X, int(i)) for i in rng.integers(0, total, n_rows + warmup)]
        timings = np.empty(n_rows)
        with _one_thread():
            for row in rows[:warmup]:
                ctx.predict(ctx.model, row)
            for k, row in enumerate(rows[warmup:]):
                start = time.perf_counter_ns()
                ctx.predict(ctx.model, row)
                timings[k] = time.perf_counter_ns() - start
        p50, p95, p99 = (float(v) / 1e6 for v in np.percentile(timings, [50, 95, 99]))
        ok = p95 <= budget
        verdict = "within" if ok else "over"
        return CheckResult(
            "latency.p95_ms",
            ok,
            observed={"p95_ms": p95, "p50_ms": p50, "p99_ms": p99, "rows": n_rows},
            threshold=float(budget),
            detail=(
                f"p95 of {n_rows} single-row predictions on one thread is {p95:.3g} ms "
                f"(p50 {p50:.3g} ms, p99 {p99:.3g} ms): {verdict} the budget of {budget:g} ms"
            ),
        )

    return latency_budget_gate


class _one_thread:
    """threadpoolctl's limit to one thread, or nothing when it is not installed."""

    def __enter__(self) -> None:
        try:
            # threadpoolctl ships no type information.
            from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
        except ImportError:
            self._limits: Any = None
            return
        self._limits = threadpool_limits(limits=1)

    def __exit__(self, *exc: object) -> None:
        if self._limits is not None:
            self._limits.unregister()


def data_checks(
    result: ValidationResult | Report | None = None,
) -> Callable[[GateContext], list[CheckResult]]:
    """A gate reporting the training set's data-validation checks (``result``, or the context's).

    Each check keeps its outcome, numbers and severity; its name gets a ``data.`` prefix.
    """

    def data_checks_gate(ctx: GateContext) -> list[CheckResult]:
        source = result if result is not None else ctx.training_validation
        if source is None:
            raise InvalidInputError(
                "no data-validation result: data_checks(result) or "
                "GateContext(training_validation=...)",
                field="training_validation",
            )
        report = source if isinstance(source, Report) else getattr(source, "report", None)
        if not isinstance(report, Report):
            raise InvalidInputError(
                f"data_checks takes a ValidationResult or a Report, got {type(source).__name__}",
                field="training_validation",
            )
        if not report.checks:
            return [CheckResult("data.checks", True, 0, None, f"{report.subject}: no checks ran")]
        return [
            CheckResult(f"data.{c.name}", c.passed, c.observed, c.threshold, c.detail, c.severity)
            for c in report.checks
        ]

    return data_checks_gate
