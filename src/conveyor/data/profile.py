"""Profiles of tables: what each column holds, in one pass, as plain JSON.

A profile is stored with every dataset version (a JSON column), so it holds
only JSON types: NaN and infinities become null, numpy and Arrow scalars
become Python numbers, timestamps ISO strings.

::

    {"rows": 1000, "columns": {"amount": {
        "type": "double", "kind": "numeric",
        "count": 990, "nulls": 10, "null_fraction": 0.01, "nan": 0, "infinite": 0,
        "distinct": 412, "min": 0.5, "max": 99.0, "mean": 21.3, "std": 8.1,
        "quantiles": {"p1": .., "p5": .., "p25": .., "p50": .., "p75": .., "p95": .., "p99": ..},
        "histogram": {"edges": [0.5, ...], "counts": [12, ...]},
        "top": null}}}

``count`` is the number of non-null values. For numeric columns NaN and
+-inf are counted (``nan``, ``infinite``) and left out of the statistics,
which are over the finite values: ``std`` is the sample standard deviation
(ddof=1, as pandas), quantiles interpolate linearly (as numpy), the
histogram has ``bins`` equal-width bins from min to max (as
``numpy.histogram``: the last bin includes the max). String, dictionary and
boolean columns get ``top``: the ``top_k`` most frequent values with their
counts (ties by value). Timestamps and dates get min and max. Each column is
read once (a Parquet file a column at a time), and everything about it is
computed from that one read with numpy and Arrow compute.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["QUANTILES", "profile", "profile_column"]

#: The quantiles every numeric column reports, by name.
QUANTILES: dict[str, float] = {
    "p1": 0.01,
    "p5": 0.05,
    "p25": 0.25,
    "p50": 0.50,
    "p75": 0.75,
    "p95": 0.95,
    "p99": 0.99,
}


def profile(data: Any, *, bins: int = 20, top_k: int = 10) -> dict[str, Any]:
    """Profile every column of a pyarrow Table, a pandas/polars frame or a Parquet file path."""
    from conveyor.data.drift.source import TableSource

    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise InvalidInputError(f"bins must be a positive integer, got {bins!r}", field="bins")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise InvalidInputError(f"top_k must be an integer >= 0, got {top_k!r}", field="top_k")
    source = TableSource.open(data, role="data")
    return {
        "rows": source.num_rows,
        "columns": {
            name: profile_column(source.column(name), bins=bins, top_k=top_k)
            for name in source.names
        },
    }


def profile_column(
    column: pa.ChunkedArray | pa.Array, *, bins: int = 20, top_k: int = 10
) -> dict[str, Any]:
    """The profile of one column (see the module docstring for the keys)."""
    import pyarrow as pa

    dtype = column.type
    rows = len(column)
    nulls = column.null_count
    facts: dict[str, Any] = {
        "type": str(dtype),
        "kind": _kind(dtype),
        "count": rows - nulls,
        "nulls": nulls,
        "null_fraction": nulls / rows if rows else None,
        "distinct": None,
        "min": None,
        "max": None,
        "mean": None,
        "std": None,
        "quantiles": None,
        "histogram": None,
        "top": None,
    }
    if pa.types.is_dictionary(dtype):
        column = column.cast(dtype.value_type)
    kind = facts["kind"]
    if kind == "numeric":
        facts.update(_numeric(column, bins))
    elif kind in ("categorical", "boolean"):
        facts.update(_counted(column, top_k, boolean=kind == "boolean"))
    elif kind == "temporal":
        facts.update(_temporal(column))
    return facts


def _kind(dtype: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_dictionary(dtype):
        return _kind(dtype.value_type)
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "numeric"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "categorical"
    if pa.types.is_temporal(dtype):
        return "temporal"
    return "other"


def _numeric(column: pa.ChunkedArray | pa.Array, bins: int) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    exact_ints = pa.types.is_integer(column.type)
    if pa.types.is_decimal(column.type):
        column = column.cast(pa.float64())
    values = pc.drop_null(column) if column.null_count else column
    x = np.asarray(values.to_numpy(), dtype=np.float64)
    nan = int(np.count_nonzero(np.isnan(x)))
    finite_mask = np.isfinite(x)
    infinite = x.size - nan - int(np.count_nonzero(finite_mask))
    x = x[finite_mask] if nan or infinite else x.copy()
    facts: dict[str, Any] = {"nan": nan, "infinite": infinite, "distinct": 0}
    if x.size == 0:
        return facts
    x.sort()
    facts["distinct"] = 1 + int(np.count_nonzero(x[1:] != x[:-1]))
    if exact_ints:
        # Integers beyond 2**53 would lose digits as floats; Arrow has them exactly.
        bounds = pc.min_max(column)
        facts["min"], facts["max"] = bounds["min"].as_py(), bounds["max"].as_py()
    else:
        facts["min"], facts["max"] = _num(x[0]), _num(x[-1])
    # Values near the largest double overflow a sum or a range: the
    # statistic becomes null (JSON has no infinity), not an error.
    with np.errstate(over="ignore", invalid="ignore"):
        facts["mean"] = _num(x.mean())
        facts["std"] = _num(x.std(ddof=1)) if x.size > 1 else None
        quantiles = np.quantile(x, list(QUANTILES.values()))
        span = float(x[-1]) - float(x[0])
    facts["quantiles"] = {k: _num(v) for k, v in zip(QUANTILES, quantiles, strict=True)}
    if math.isfinite(span):  # no equal-width bins over a range wider than the largest double
        counts, edges = np.histogram(x, bins=bins)
        facts["histogram"] = {
            "edges": [_num(e) for e in edges],
            "counts": [int(c) for c in counts],
        }
    return facts


def _counted(column: pa.ChunkedArray | pa.Array, top_k: int, *, boolean: bool) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pc.drop_null(column) if column.null_count else column
    tally = pc.value_counts(values)
    table = pa.table({"value": tally.field("values"), "count": tally.field("counts")})
    facts: dict[str, Any] = {"distinct": table.num_rows}
    if boolean and len(values):
        facts["mean"] = _num(pc.mean(values.cast(pa.float64())).as_py())
    top = table.sort_by([("count", "descending"), ("value", "ascending")]).slice(0, top_k)
    facts["top"] = [
        {"value": _plain(v), "count": int(c)}
        for v, c in zip(
            top.column("value").to_pylist(), top.column("count").to_pylist(), strict=True
        )
    ]
    return facts


def _temporal(column: pa.ChunkedArray | pa.Array) -> dict[str, Any]:
    import pyarrow.compute as pc

    if column.null_count == len(column):
        return {"distinct": 0}
    bounds = pc.min_max(column)
    return {
        "distinct": int(pc.count_distinct(column).as_py()),
        "min": _plain(bounds["min"].as_py()),
        "max": _plain(bounds["max"].as_py()),
    }


def _num(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _plain(value: Any) -> Any:
    """A JSON value: dates and times as ISO strings, bytes as hex, non-finite floats as None."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, bytes):
        return value.hex()
    iso = getattr(value, "isoformat", None)
    if callable(iso):
        return iso()
    return str(value)
