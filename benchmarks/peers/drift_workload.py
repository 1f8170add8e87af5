"""The drift workload: columns, their distributions and the planted shifts.

Standard library only, so the driver and every side can import it. The
driver (``drift.py``) draws the data from this plan with numpy; the sides
only need the file paths, and report which columns they found drifted.

Two frames (reference, current) of ``rows`` rows and 100 columns: 50
numeric and 50 categorical. Ten of each move between the frames; the other
80 are drawn from the same distribution in both. Several shifts are
deliberately subtle: under Evidently's default thresholds (normed
Wasserstein 0.1 for numeric columns, Jensen-Shannon 0.1 for categorical
ones), yet real: a 0.08 standard-deviation mean shift, a mixture weight
moving from 30% to 34%, categorical shifts with a Jensen-Shannon distance
of 0.08-0.095, a binary rate from 30% to 33%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SEED = 20240611
FULL_ROWS = 1_000_000
QUICK_ROWS = 50_000
CHUNK_ROWS = 250_000  # rows drawn (and written as one Parquet row group) at a time
GENERATOR_VERSION = 1


@dataclass(frozen=True, slots=True)
class Column:
    """One column: how it is drawn in the reference and, if planted, in the current frame."""

    name: str
    kind: str  # "numeric" or "categorical"
    base: dict[str, Any]
    shifted: dict[str, Any] | None = None
    what: str = ""
    subtle: bool = False  # below Evidently's default threshold
    expected: dict[str, float] = field(default_factory=dict)

    @property
    def planted(self) -> bool:
        return self.shifted is not None


def _zipf(k: int) -> list[float]:
    return [1.0 / r for r in range(1, k + 1)]


def js_distance(p: list[float], q: list[float]) -> float:
    """Jensen-Shannon distance (base 2) of two probability vectors (need not be normalised)."""
    sp, sq = sum(p), sum(q)
    total = 0.0
    for a, b in zip(p, q, strict=True):
        a, b = a / sp, b / sq
        m = (a + b) / 2
        total += (a * math.log2(a / m) if a else 0.0) + (b * math.log2(b / m) if b else 0.0)
    return math.sqrt(max(total, 0.0) / 2)


def _cat(name: str, probs: list[float], shifted: list[float] | None = None, **kw: Any) -> Column:
    base = {"dist": "categorical", "probs": probs}
    moved = {"dist": "categorical", "probs": shifted} if shifted is not None else None
    expected = {"js_distance": js_distance(probs, shifted)} if shifted is not None else {}
    return Column(name, "categorical", base, moved, expected=expected, **kw)


def _num(
    name: str, base: dict[str, Any], shifted: dict[str, Any] | None = None, **kw: Any
) -> Column:
    return Column(name, "numeric", base, shifted, **kw)


N = {"dist": "normal", "loc": 50.0, "scale": 10.0}

PLANTED_NUMERIC = [
    _num(
        "num_00",
        N,
        {**N, "loc": 50.8},
        what="mean +0.08 sd",
        subtle=True,
        expected={"wasserstein_normed": 0.08},
    ),
    _num(
        "num_01", N, {**N, "loc": 53.0}, what="mean +0.3 sd", expected={"wasserstein_normed": 0.3}
    ),
    _num("num_02", N, {**N, "scale": 11.5}, what="sd x1.15", expected={"wasserstein_normed": 0.12}),
    _num(
        "num_03",
        {"dist": "exponential", "scale": 3.0},
        {"dist": "exponential", "scale": 3.0, "outliers": 0.03, "factor": 10.0},
        what="3% of values x10 (outliers)",
    ),
    _num(
        "num_04",
        {"dist": "uniform", "low": 0.0, "high": 1.0},
        {"dist": "uniform", "low": 0.04, "high": 1.04},
        what="range moved by 4%",
        expected={"wasserstein_normed": 0.139},
    ),
    _num(
        "num_05",
        {"dist": "poisson", "lam": 20.0},
        {"dist": "poisson", "lam": 21.0},
        what="integer mean 20 -> 21",
        expected={"wasserstein_normed": 0.22},
    ),
    _num(
        "num_06",
        {**N, "loc": 5.0, "scale": 1.0},
        {**N, "loc": 5.0, "scale": 1.0, "zeros": 0.05},
        what="5% of values imputed as 0",
    ),
    _num(
        "num_07",
        {"dist": "mixture", "weight": 0.30},
        {"dist": "mixture", "weight": 0.34},
        what="mixture weight 30% -> 34%",
        subtle=True,
        expected={"wasserstein_normed": 0.077},
    ),
    _num(
        "num_08",
        N,
        {**N, "loc": 50.6},
        what="mean +0.06 sd",
        subtle=True,
        expected={"wasserstein_normed": 0.06},
    ),
    _num(
        "num_09",
        {"dist": "lognormal", "sigma": 1.0},
        {"dist": "lognormal", "sigma": 1.15},
        what="log-scale spread x1.15",
    ),
]

_Z8 = _zipf(8)
_Z8_MOVED = [v * f for v, f in zip(_Z8, [0.85, 1, 1, 1, 1, 1, 1.5, 1.9], strict=True)]

PLANTED_CATEGORICAL = [
    _cat("cat_00", [40, 30, 20, 10], [31, 30, 24, 15], what="4 categories, JS 0.095", subtle=True),
    _cat("cat_01", _Z8, _Z8_MOVED, what="8 categories (Zipf), JS 0.090", subtle=True),
    _cat(
        "cat_02",
        [30, 25, 20, 15, 10, 0],
        [29.55, 24.625, 19.7, 14.775, 9.85, 1.5],
        what="a new category at 1.5%",
        subtle=True,
    ),
    _cat(
        "cat_03",
        [30, 25, 20, 15, 10],
        [33.3, 27.8, 22.2, 16.7, 0],
        what="a 10% category disappears",
    ),
    _cat("cat_04", [70, 30], [67, 33], what="binary rate 30% -> 33%", subtle=True),
    _cat("cat_05", [40, 30, 20, 10], [10, 20, 30, 40], what="order reversed"),
    _cat(
        "cat_06",
        [12, 12, 10, 10, 9, 9, 8, 8, 7, 6, 5, 4],
        [12, 12, 10, 10, 9, 9, 8, 8, 4, 6, 5, 7],
        what="two of 12 categories swap",
        subtle=True,
    ),
    _cat(
        "cat_07",
        [50, 30, 15, 4, 1],
        [49.5, 29.7, 14.85, 3.95, 2],
        what="a 1% category doubles",
        subtle=True,
    ),
    _cat("cat_08", [25, 25, 25, 25], [15, 25, 25, 35], what="JS 0.12"),
    Column(
        "cat_09",
        "categorical",
        {"dist": "bool", "p": 0.50},
        {"dist": "bool", "p": 0.46},
        what="boolean 50% -> 46%",
        subtle=True,
        expected={"js_distance": js_distance([50, 50], [46, 54])},
    ),
]

_NUMERIC_BASES: list[dict[str, Any]] = [
    N,
    {"dist": "lognormal", "sigma": 0.8},
    {"dist": "exponential", "scale": 2.0},
    {"dist": "uniform", "low": -5.0, "high": 5.0},
    {"dist": "poisson", "lam": 12.0},
    {"dist": "gamma", "shape": 2.0, "scale": 3.0},
    {"dist": "student_t", "df": 4.0},
    {"dist": "mixture", "weight": 0.5},
    {"dist": "ages"},
    {"dist": "normal", "loc": 0.0, "scale": 1e-3},
]
_CATEGORICAL_BASES: list[dict[str, Any]] = [
    {"dist": "categorical", "probs": [40, 30, 20, 10]},
    {"dist": "categorical", "probs": _zipf(8)},
    {"dist": "categorical", "probs": [1] * 12},
    {"dist": "categorical", "probs": [70, 30]},
    {"dist": "categorical", "probs": _zipf(50)},
    {"dist": "categorical", "probs": [90, 5, 3, 1, 0.5, 0.5]},
    {"dist": "bool", "p": 0.2},
    {"dist": "categorical", "probs": [1, 1, 1]},
]

STEADY_NUMERIC = [
    Column(f"num_{i:02d}", "numeric", _NUMERIC_BASES[i % len(_NUMERIC_BASES)])
    for i in range(10, 50)
]
STEADY_CATEGORICAL = [
    Column(f"cat_{i:02d}", "categorical", _CATEGORICAL_BASES[i % len(_CATEGORICAL_BASES)])
    for i in range(10, 50)
]

PLAN: list[Column] = [*PLANTED_NUMERIC, *STEADY_NUMERIC, *PLANTED_CATEGORICAL, *STEADY_CATEGORICAL]
PLANTED = [c.name for c in PLAN if c.planted]
SUBTLE = [c.name for c in PLAN if c.subtle]


class Phases:
    """``with phases("read"): ...`` records the seconds of each named phase of a side."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> _Phase:
        return _Phase(self, name)


class _Phase:
    def __init__(self, phases: Phases, name: str) -> None:
        self.phases, self.name = phases, name

    def __enter__(self) -> None:
        import time

        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        import time

        self.phases.seconds[self.name] = time.perf_counter() - self.start


def plain(value: Any) -> Any:
    """A JSON number: NaN and infinities as None, numpy scalars as floats."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
