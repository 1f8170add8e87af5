"""One column at a time: what ``fit`` learns about it and how ``score`` compares against it.

Numeric columns hold float64 values (nulls, NaN and +-inf are missing: a
distribution test needs finite numbers). Categorical columns (strings,
dictionaries, booleans, and numeric columns with at most five distinct
values) are counted chunk by chunk, so their memory is one chunk plus the
table of categories.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from conveyor.data.drift import stats
from conveyor.data.drift.source import TableSource
from conveyor.data.drift.spill import SortedSpill

if TYPE_CHECKING:
    from conveyor.data.drift.stats import Floats, Outcome

Kind = Literal["numeric", "categorical"]
Ints = NDArray[np.int64]

#: Tests on the sorted values of both samples; the rest work on counts.
EXACT_TESTS = ("ks", "wasserstein")
COUNT_TESTS = ("chisquare", "z")
DISTANCE_TESTS = ("psi", "jensenshannon", "wasserstein")
TESTS = ("ks", "chisquare", "z", "psi", "jensenshannon", "wasserstein")
#: Evidently's cut: a numeric column with at most this many distinct values is categorical.
DISCRETE_MAX_VALUES = 5
_IQR_FENCE = 1.5


def kind_of(dtype: pa.DataType) -> Kind | None:
    """numeric, categorical, or None for types no test applies to (timestamps, lists...)."""
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "numeric"
    if pa.types.is_dictionary(dtype):
        return kind_of(dtype.value_type) and "categorical"
    if pa.types.is_boolean(dtype) or pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "categorical"
    return None


@dataclass(slots=True)
class ColumnModel:
    """What ``fit`` learned about one reference column."""

    name: str
    dtype: str
    kind: Kind | None
    test: str | None
    reason: str = ""
    rows: int = 0
    missing: int = 0
    values: int = 0
    distinct: int = 0
    # numeric
    mean: float | None = None
    std: float | None = None
    fences: tuple[float, float] | None = None
    outliers: int = 0
    sorted_file: str | None = None  # the sorted values, for the exact tests
    edges: Floats | None = None
    # counted (categorical, discrete numeric, binned numeric)
    categories: pa.Array | None = None
    counts: Ints | None = None

    @property
    def discrete(self) -> bool:
        """Compared by counts of values rather than by sorted samples or bins."""
        return self.categories is not None


@dataclass(slots=True)
class ColumnScore:
    """The raw comparison of one column, before the correction across columns."""

    model: ColumnModel
    test: str | None
    outcome: Outcome | None = None
    reason: str = ""
    rows: int = 0
    missing: int = 0
    values: int = 0
    outliers: int | None = None
    new_categories: list[Any] = field(default_factory=list)
    counted: bool = False  # the current column was read: its missing rate is known


# -- fit ----------------------------------------------------------------------


def fit_column(
    source: TableSource,
    name: str,
    requested: str | None,
    *,
    bins: int,
    chunk_rows: int,
    max_categories: int,
    spill: SortedSpill | None = None,
) -> ColumnModel:
    """Learn column ``name`` of the reference; ``requested`` is a test name or None (auto)."""
    dtype = source.schema.field(name).type
    model = ColumnModel(name, str(dtype), kind_of(dtype), None, rows=source.num_rows)
    if model.kind is None:
        model.reason = f"type {dtype} is not tested (numeric, boolean and string columns are)"
        return model
    if model.kind == "numeric":
        _fit_numeric(model, source.column(name), requested, bins, spill)
    else:
        values, counts, model.missing = count_values(source.chunks(name, chunk_rows))
        model.values, model.distinct = int(counts.sum()), len(counts)
        if model.distinct > max_categories and requested is None:
            model.reason = (
                f"{model.distinct:,} distinct values (over max_categories={max_categories:,}): "
                "an identifier or free text, not a category"
            )
            return model
        model.categories, model.counts = values, counts
        model.test = requested or ("z" if model.distinct <= 2 else "chisquare")
    if model.values == 0:
        model.test, model.reason = None, "no values in the reference"
    return model


def _fit_numeric(
    model: ColumnModel,
    column: pa.ChunkedArray,
    requested: str | None,
    bins: int,
    spill: SortedSpill | None,
) -> None:
    x, model.missing = finite_values(column)
    x.sort()
    model.values = x.size
    if x.size == 0:
        return
    model.distinct = distinct_sorted(x)
    model.mean, model.std = float(x.mean()), float(x.std())
    q25, q75 = sorted_quantiles(x, (0.25, 0.75))
    model.fences = (q25 - _IQR_FENCE * (q75 - q25), q75 + _IQR_FENCE * (q75 - q25))
    model.outliers = outside_sorted(x, model.fences)
    discrete = model.distinct <= DISCRETE_MAX_VALUES
    if requested is None:
        model.test = "ks" if not discrete else ("z" if model.distinct <= 2 else "chisquare")
    else:
        model.test = requested
    if model.test in EXACT_TESTS and spill is not None:
        model.sorted_file = spill.put(x)
    if model.test in COUNT_TESTS or (discrete and model.test not in EXACT_TESTS):
        starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
        model.categories = pa.array(x[starts])
        model.counts = np.diff(np.r_[starts, x.size]).astype(np.int64)
    elif model.test not in EXACT_TESTS:
        cuts = sorted_quantiles(x, np.linspace(0.0, 1.0, bins + 1)[1:-1])
        model.edges = np.unique(cuts)
        model.counts = np.bincount(
            np.searchsorted(model.edges, x, side="right"), minlength=model.edges.size + 1
        ).astype(np.int64)


# -- score --------------------------------------------------------------------


def score_column(
    model: ColumnModel,
    reference: TableSource,
    current: TableSource,
    *,
    chunk_rows: int,
    wasserstein_floor: float,
) -> ColumnScore:
    """Compare column ``model.name`` of ``current`` against what fit learned."""
    score = ColumnScore(model, model.test, rows=current.num_rows)
    if model.test is None:
        score.reason = model.reason
        return score
    if model.name not in current.schema.names:
        score.test, score.reason = None, "missing from the current data"
        return score
    dtype = current.schema.field(model.name).type
    if kind_of(dtype) != model.kind:
        score.test = None
        score.reason = f"type changed from {model.dtype} to {dtype}: not comparable"
        return score
    if model.kind == "numeric" and model.test in EXACT_TESTS:
        _score_exact(score, reference, current, wasserstein_floor)
    elif model.kind == "numeric" and not model.discrete:
        _score_binned(score, current.chunks(model.name, chunk_rows))
    else:
        _score_counts(score, current.chunks(model.name, chunk_rows))
    return score


def _score_exact(
    score: ColumnScore, reference: TableSource, current: TableSource, floor: float
) -> None:
    model = score.model
    cur, score.missing = finite_values(current.column(model.name))
    cur.sort()
    score.values, score.counted = cur.size, True
    assert model.fences is not None and model.std is not None
    score.outliers = outside_sorted(cur, model.fences)
    if cur.size == 0:
        score.reason = "no values in the current data"
        return
    ref = SortedSpill.get(model.sorted_file)
    if ref is None:
        ref, _ = finite_values(reference.column(model.name))
        ref.sort()
    if model.test == "ks":
        score.outcome = stats.ks_2samp(ref, cur)
    else:
        # Evidently's normalisation: distance in reference standard deviations.
        distance = stats.wasserstein(ref, cur) / max(model.std, floor)
        score.outcome = stats.Outcome(distance, None, distance)


def _score_binned(score: ColumnScore, chunks: Iterable[pa.Array]) -> None:
    model = score.model
    assert model.edges is not None and model.counts is not None and model.fences is not None
    counts = np.zeros(model.edges.size + 1, dtype=np.int64)
    outliers = 0
    for chunk in chunks:
        x, missing = finite_values(chunk)
        score.missing += missing
        counts += np.bincount(
            np.searchsorted(model.edges, x, side="right"), minlength=counts.size
        ).astype(np.int64)
        outliers += int(np.count_nonzero((x < model.fences[0]) | (x > model.fences[1])))
    score.values, score.outliers, score.counted = int(counts.sum()), outliers, True
    if score.values == 0:
        score.reason = "no values in the current data"
        return
    score.outcome = _distance(model.test, model.counts, counts)


def _score_counts(score: ColumnScore, chunks: Iterable[pa.Array]) -> None:
    model = score.model
    assert model.categories is not None and model.counts is not None
    numeric = model.kind == "numeric"
    if numeric:
        chunks = _numeric_chunks(score, chunks)
    values, counts, missing = count_values(chunks, numeric=numeric)
    score.missing += missing
    score.values, score.counted = int(counts.sum()), True
    if score.values == 0:
        score.reason = "no values in the current data"
        return
    ref, cur, new = align_counts(model.categories, model.counts, values, counts)
    score.new_categories = new
    test = model.test
    if test == "z" and (new or ref.size > 2):
        # A category the reference never had: a two-proportion test cannot
        # see it, a chi-squared test of the whole table can.
        test = score.test = "chisquare"
    if test == "z":
        score.outcome = stats.z_two_proportions(
            int(ref[0]), int(ref.sum()), int(cur[0]), int(cur.sum())
        )
    elif test == "chisquare":
        score.outcome = stats.chi2_two_sample(ref, cur)
    else:
        score.outcome = _distance(test, ref, cur)


def _numeric_chunks(score: ColumnScore, chunks: Iterable[pa.Array]) -> Iterable[pa.Array]:
    """Finite values of each chunk as Arrow arrays, counting missing values and outliers."""
    fences = score.model.fences
    assert fences is not None
    score.outliers = 0
    for chunk in chunks:
        x, missing = finite_values(chunk)
        score.missing += missing
        score.outliers += int(np.count_nonzero((x < fences[0]) | (x > fences[1])))
        yield pa.array(x)


def _distance(test: str | None, reference: Ints, current: Ints) -> Outcome:
    if test == "psi":
        value = stats.psi(reference, current)
    elif test == "jensenshannon":
        value = stats.jensenshannon(reference, current)
    else:  # pragma: no cover - parameters are validated before any scoring
        raise ValueError(f"{test} is not a binned distance")
    return stats.Outcome(value, None, value)


# -- values and counts --------------------------------------------------------


def finite_values(column: pa.Array | pa.ChunkedArray) -> tuple[Floats, int]:
    """The finite values of a numeric column as float64, and how many were missing."""
    total = len(column)
    if pa.types.is_decimal(column.type):
        column = column.cast(pa.float64())
    if column.null_count:
        column = pc.drop_null(column)
    x = np.asarray(column.to_numpy(), dtype=np.float64)
    if pa.types.is_floating(column.type):
        finite = np.isfinite(x)
        if not finite.all():
            x = x[finite]
    if not x.flags.writeable:
        x = x.copy()  # a zero-copy view of Arrow memory; callers sort in place
    return x, total - x.size


def count_values(
    chunks: Iterable[pa.Array], *, numeric: bool = False
) -> tuple[pa.Array, Ints, int]:
    """Distinct non-null values (sorted) with their counts, and the number of nulls."""
    values: list[pa.Array] = []
    counts: list[pa.Array] = []
    missing = 0
    for chunk in chunks:
        missing += chunk.null_count
        if pa.types.is_dictionary(chunk.type):
            indices = chunk.indices.filter(chunk.is_valid()) if chunk.null_count else chunk.indices
            tally = np.bincount(indices.to_numpy(), minlength=len(chunk.dictionary))
            seen = np.flatnonzero(tally)
            values.append(_common(chunk.dictionary.take(pa.array(seen))))
            counts.append(pa.array(tally[seen].astype(np.int64)))
        else:
            tally = pc.value_counts(pc.drop_null(chunk) if chunk.null_count else chunk)
            values.append(_common(tally.field("values")))
            counts.append(tally.field("counts"))
    if not values:
        empty = pa.array([], type=pa.float64() if numeric else pa.string())
        return empty, np.zeros(0, dtype=np.int64), missing
    table = pa.table({"value": pa.concat_arrays(values), "count": pa.concat_arrays(counts)})
    if len(values) > 1:  # one chunk's values are distinct already
        summed = table.group_by("value").aggregate([("count", "sum")])
        table = pa.table({"value": summed.column("value"), "count": summed.column("count_sum")})
    table = table.sort_by("value")
    return (
        table.column("value").combine_chunks(),
        np.asarray(table.column("count").to_numpy(), dtype=np.int64),
        missing,
    )


def align_counts(
    ref_values: pa.Array, ref_counts: Ints, cur_values: pa.Array, cur_counts: Ints
) -> tuple[Ints, Ints, list[Any]]:
    """Both count vectors over the union of categories, and the categories new in current."""
    if ref_values.type != cur_values.type:
        # A retyped column (bool -> string, say): match the categories by their text.
        ref_values, cur_values = ref_values.cast(pa.string()), cur_values.cast(pa.string())
    where = np.asarray(
        pc.fill_null(pc.index_in(cur_values, value_set=ref_values), -1).to_numpy(), dtype=np.int64
    )
    known = where >= 0
    cur_on_ref = np.zeros(ref_counts.size, dtype=np.int64)
    cur_on_ref[where[known]] = cur_counts[known]
    unseen = ~known
    new_values = cur_values.filter(pa.array(unseen)).to_pylist() if unseen.any() else []
    if not new_values:
        return ref_counts, cur_on_ref, []
    ref = np.concatenate((ref_counts, np.zeros(len(new_values), dtype=np.int64)))
    cur = np.concatenate((cur_on_ref, cur_counts[unseen]))
    return ref, cur, new_values


def _common(values: pa.Array) -> pa.Array:
    """One type per kind of value, so chunks, files and frames can be merged and matched."""
    dtype = values.type
    if pa.types.is_large_string(dtype):
        return values.cast(pa.string())
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return values.cast(pa.float64())
    return values


def distinct_sorted(x: Floats) -> int:
    return 0 if x.size == 0 else 1 + int(np.count_nonzero(x[1:] != x[:-1]))


def outside_sorted(x: Floats, fences: tuple[float, float]) -> int:
    """How many values of sorted ``x`` lie outside ``[low, high]``."""
    low = int(np.searchsorted(x, fences[0], side="left"))
    high = int(np.searchsorted(x, fences[1], side="right"))
    return low + (x.size - high)


def sorted_quantiles(x: Floats, qs: Iterable[float]) -> list[float]:
    """Quantiles of sorted ``x`` by linear interpolation, as ``numpy.quantile`` (no re-sort)."""
    q = np.asarray(list(qs), dtype=np.float64)
    position = q * (x.size - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, x.size - 1)
    weight = position - below
    lo, hi = x[below], x[above]
    return [float(v) for v in lo + (hi - lo) * weight]
