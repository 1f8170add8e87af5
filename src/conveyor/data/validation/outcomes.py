"""Counts from the first pass turned into :class:`CheckResult`s with details in words.

``observed`` is the failing fraction of rows for a row-level expectation
(``threshold`` its ``mostly``), the row count for ``row_count`` (threshold
``{"min", "max"}``), the lag in seconds for ``freshness`` (threshold
``max_lag`` in seconds) and the list of problems for ``schema``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.checks.result import CheckResult
from conveyor.data.validation.expectations import (
    Between,
    Custom,
    Freshness,
    InSet,
    MatchesRegex,
    NotNull,
    RowCount,
    RowExpectation,
    Schema,
    Unique,
)
from conveyor.data.validation.plan import Plan, category

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["arrow_type_name", "batch_check", "percent", "row_check", "unevaluable"]

# Floating point slack when comparing a failing fraction with 1 - mostly.
_EPSILON = 1e-9
_SHOWN_VALUES = 6


def row_check(plan: Plan, failures: int, rows: int, schema: pa.Schema) -> CheckResult:
    expectation = plan.expectation
    mostly = float(getattr(expectation, "mostly", 1.0))
    fraction = failures / rows if rows else 0.0
    passed = failures <= (1.0 - mostly) * rows + _EPSILON
    detail = f"{failures:,} of {rows:,} rows ({percent(fraction)}) {_phrase(plan, schema)}"
    if plan.scope:
        detail += f" ({plan.scope})"
    if mostly < 1.0:
        detail += f"; at least {percent(mostly)} must pass"
    return CheckResult(
        name=expectation.name,
        passed=passed,
        observed=fraction,
        threshold=mostly,
        detail=detail,
        severity=expectation.severity,
    )


def unevaluable(plan: Plan, reason: str) -> CheckResult:
    """A check that could not run on this batch is a failure, with the reason."""
    expectation = plan.expectation
    return CheckResult(
        name=expectation.name,
        passed=False,
        observed=None,
        threshold=getattr(expectation, "mostly", None),
        detail=f"cannot check: {reason}",
        severity=expectation.severity,
    )


def batch_check(
    plan: Plan, facts: Mapping[str, Any], rows: int, schema: pa.Schema, now: datetime
) -> CheckResult:
    expectation = plan.expectation
    if isinstance(expectation, RowCount):
        low, high = expectation.min, expectation.max
        passed = (low is None or rows >= low) and (high is None or rows <= high)
        return CheckResult(
            name=expectation.name,
            passed=passed,
            observed=rows,
            threshold={"min": low, "max": high},
            detail=f"{rows:,} rows; expected {_range(low, high)}",
            severity=expectation.severity,
        )
    if isinstance(expectation, Freshness):
        return _freshness(expectation, facts[f"t{plan.index}"], now)
    if isinstance(expectation, Schema):
        return _schema(plan, expectation, facts, schema)
    raise TypeError(f"{expectation.kind} is not a batch-level expectation")


def percent(fraction: float) -> str:
    """``0.37%``, ``100%``, ``<0.01%``: short and never rounded to a misleading 0."""
    if fraction == 0:
        return "0%"
    if fraction < 1e-4:
        return "<0.01%"
    return f"{fraction * 100:.2f}".rstrip("0").rstrip(".") + "%"


# -- details ----------------------------------------------------------------------


def _phrase(plan: Plan, schema: pa.Schema) -> str:
    e = plan.expectation
    if isinstance(e, NotNull):
        is_float = category(schema.field(e.column).type) == "float"
        return "are null or NaN" if is_float else "are null"
    if isinstance(e, Between):
        low = "-inf" if e.min is None else _show(e.min)
        high = "+inf" if e.max is None else _show(e.max)
        opening = "(" if e.strict_min or e.min is None else "["
        closing = ")" if e.strict_max or e.max is None else "]"
        return f"outside {opening}{low}, {high}{closing}"
    if isinstance(e, InSet):
        shown = ", ".join(_show(v) for v in e.values[:_SHOWN_VALUES])
        more = f", ... ({len(e.values)} values)" if len(e.values) > _SHOWN_VALUES else ""
        return f"not in {{{shown}{more}}}"
    if isinstance(e, MatchesRegex):
        return f"do not match /{e.pattern}/"
    if isinstance(e, Unique):
        keys = ", ".join(e.keys)
        return f"share their {keys} with another row"
    if isinstance(e, Custom):
        return f"fail {e.name}"
    if isinstance(e, RowExpectation):
        return e.phrase()
    return "fail"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"between {low:,} and {high:,}"
    if low is not None:
        return f"at least {low:,}"
    return f"at most {high:,}"


def _freshness(expectation: Freshness, newest_us: int | None, now: datetime) -> CheckResult:
    allowed = expectation.max_lag
    if newest_us is None:
        return CheckResult(
            name=expectation.name,
            threshold=allowed,
            severity=expectation.severity,
            passed=False,
            observed=None,
            detail=f"no {expectation.column} value to judge freshness by (no rows, or all null)",
        )
    newest = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=newest_us)
    lag = (now - newest).total_seconds()
    age = f"{duration(lag)} old" if lag >= 0 else f"{duration(-lag)} ahead of now"
    return CheckResult(
        name=expectation.name,
        threshold=allowed,
        severity=expectation.severity,
        passed=lag <= allowed,
        observed=lag,
        detail=f"newest {expectation.column} is {age} ({newest.isoformat()}); "
        f"at most {duration(allowed)} allowed",
    )


def duration(seconds: float) -> str:
    """``3h 12m``, ``2d 4h``, ``45s``, ``0.5s``: two units at most."""
    if seconds < 60:
        return f"{seconds:.3g}s"
    parts: list[tuple[int, str]] = []
    remaining = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count or parts:
            parts.append((count, unit))
    return " ".join(f"{count}{unit}" for count, unit in parts[:2] if count)


def _schema(
    plan: Plan, expectation: Schema, facts: Mapping[str, Any], schema: pa.Schema
) -> CheckResult:
    problems: dict[str, Any] = {}
    present = {f.name: f.type for f in schema}
    missing = [c.name for c in expectation.columns if c.name not in present]
    if missing:
        problems["missing"] = missing
    retyped = {
        c.name: {"expected": _type_name(c.type), "found": str(present[c.name])}
        for c in expectation.columns
        if c.name in present and _type_name(c.type) != str(present[c.name])
    }
    if retyped:
        problems["wrong_type"] = retyped
    nulls = {
        c.name: int(facts[f"n{plan.index}_{k}"])
        for k, c in enumerate(expectation.columns)
        if not c.nullable and c.name in present and facts[f"n{plan.index}_{k}"]
    }
    if nulls:
        problems["nulls_in_non_nullable"] = nulls
    if not expectation.extra_columns:
        expected = {c.name for c in expectation.columns}
        extra = [name for name in present if name not in expected]
        if extra:
            problems["unexpected"] = extra
    words = []
    if missing:
        words.append(f"missing columns: {', '.join(missing)}")
    if retyped:
        words.append(
            "wrong types: "
            + ", ".join(
                f"{k} is {v['found']}, expected {v['expected']}" for k, v in retyped.items()
            )
        )
    if nulls:
        words.append(
            "nulls in non-nullable columns: "
            + ", ".join(f"{k} ({v:,} rows)" for k, v in nulls.items())
        )
    if "unexpected" in problems:
        words.append(f"columns not in the schema: {', '.join(problems['unexpected'])}")
    return CheckResult(
        name=expectation.name,
        passed=not problems,
        observed=problems,
        threshold={"columns": len(expectation.columns), "extra_columns": expectation.extra_columns},
        detail="; ".join(words) or f"all {len(expectation.columns)} expected columns as declared",
        severity=expectation.severity,
    )


_ALIASES = {
    "int": "int64",
    "integer": "int64",
    "float64": "double",
    "float32": "float",
    "str": "string",
    "utf8": "string",
    "large_utf8": "large_string",
    "boolean": "bool",
}


def arrow_type_name(name: str) -> str:
    """The Arrow spelling of a type name (``float64`` -> ``double``), as the schema
    expectation and the feature store's definitions read type names."""
    text = name.strip()
    return _ALIASES.get(text.lower(), text)


_type_name = arrow_type_name
