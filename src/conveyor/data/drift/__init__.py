"""Drift statistics: has the data moved away from a reference?

::

    detector = DriftDetector().fit("train.parquet")       # or a pyarrow/pandas/polars table
    result = detector.score("2024-06.parquet")
    result.dataset_drift, result.drifted_columns, result["amount"].p_value
    report = result.to_report("dataset:transactions")     # a conveyor.checks.Report

Tests
-----
``ks``
    Two-sample Kolmogorov-Smirnov on the exact samples (numeric).
    Effect size: the KS statistic D, the largest gap between the two CDFs.
``chisquare``
    Chi-squared test of homogeneity on the 2 x k table of category counts,
    without Yates' correction. Effect size: Cramér's V of the two
    distributions as if both samples were the same size (plain V shrinks as
    the sizes grow unequal, so a small window would hide its drift).
``z``
    Two-sided z-test for two proportions (binary columns). Effect size:
    Cohen's h.
``psi``, ``jensenshannon``
    Population Stability Index and Jensen-Shannon distance (base 2) of the
    category counts, or of a numeric column binned at the reference's
    quantiles (``bins``). Distances, no p-value.
``wasserstein``
    First Wasserstein distance on the exact samples divided by the
    reference standard deviation (floored at 0.001), as Evidently does.
    A distance, no p-value.

Each statistic equals scipy's on the same inputs (see :mod:`.stats`).

The default test (``tests="auto"``)
-----------------------------------
Evidently picks a test per column from its type, its number of distinct
values and the size of the reference (``get_default_stattest``)::

    reference <= 1000 rows: numeric with > 5 distinct values  -> ks
                            numeric with <= 5, or categorical -> chisquare (> 2 values) or z (<= 2)
    reference  > 1000 rows: numeric with > 5 distinct values  -> wasserstein (normed), alarm at 0.1
                            numeric with <= 5, or categorical -> jensenshannon, alarm at 0.1

Conveyor keeps the first branch and applies it at **every** reference size:
ks for numeric columns with more than 5 distinct values; chisquare for a
categorical (string, boolean, dictionary) or a numeric column with 3 to 5
distinct values; z for one with at most 2. What changed and why:

* Above 1,000 rows Evidently switches to fixed distance thresholds so that
  large samples do not alarm on tiny shifts. But the thresholds ignore the
  sample size and are coarse: a 0.1 standard-deviation mean shift is a
  normed Wasserstein distance of about 0.1, so it is found about half the
  time, and a categorical shift with a Jensen-Shannon distance just under
  0.1 is never found (Evidently missed 2 of 10 such columns on 1M rows).
  Evidently 0.7 also takes scipy's default natural logarithm for the
  Jensen-Shannon distance, so its 0.1 is 0.12 in base 2, the base
  Conveyor's ``jensenshannon`` uses (bounded by 1).
  Conveyor keeps the p-value tests and guards against negligible shifts
  with an **effect-size floor** instead: a column drifts only when its
  adjusted p-value is below ``alpha`` *and* its effect size reaches the
  floor of its test. Default floors, about a quarter of Cohen's "small":
  ks D >= 0.02 (a 0.05 standard-deviation mean shift of a normal), chisquare
  V >= 0.025, z h >= 0.05.
* The p-values are corrected across columns with Benjamini-Hochberg
  (``correction="bh"``), so 100 columns of unchanged data do not alarm on
  five of them by chance. Evidently does not correct.
* The choice is made at ``fit`` from the reference alone (Evidently counts
  the distinct values of reference and current together), so a detector
  scores every window with the same test. A binary column whose current
  data brings a category the reference never had is scored with
  chisquare instead of z for that window: a two-proportion test cannot
  see a new category.
* Evidently's chisquare is a goodness-of-fit test that takes the
  reference counts as exact; Conveyor's is the two-sample test of
  homogeneity, which accounts for the reference's own sampling noise
  (the goodness-of-fit form roughly doubles the statistic under no drift
  when both samples are the same size, and so alarms far more than alpha).
* String columns with more than ``max_categories`` (1,000) distinct values
  are identifiers or free text and are not compared; timestamps and nested
  types are not compared either (Evidently has separate text handling).

The distance tests stay available by name, with Evidently's thresholds
(0.1 each; ``thresholds=`` changes them).

Dataset level, schema and rates
-------------------------------
The dataset drifted when the share of compared columns that drifted is at
least ``drift_share`` (0.5, as Evidently). The result also carries the
schema change against the reference (columns added, removed, retyped:
:func:`conveyor.data.schema.diff_schema`), and per column the missing rate
(null, NaN, +-inf) and the outlier rate (outside the reference's 1.5 IQR
fences) in both samples; a rate change is flagged by a two-proportion
z-test (corrected across columns, floor h >= 0.05).

Memory
------
A Parquet input is read a column at a time: the exact tests (ks,
wasserstein) hold one column of each sample (8 bytes a value); counted
columns are read in chunks of ``chunk_rows`` rows. ``fit`` keeps per-column
summaries, a handle on the reference (the Arrow table, or the Parquet path
with its size and modification time: a changed file is an error at
``score``) and, for the exact tests, the sorted reference column in a
private temporary folder (:mod:`.spill`; removed with the detector), so
that every ``score`` maps it back instead of decoding and sorting it again.
"""

from conveyor.data.drift.detector import (
    DEFAULT_EFFECT_SIZE_FLOORS,
    DEFAULT_THRESHOLDS,
    TESTS,
    DriftDetector,
)
from conveyor.data.drift.result import ColumnDrift, DriftResult

__all__ = [
    "DEFAULT_EFFECT_SIZE_FLOORS",
    "DEFAULT_THRESHOLDS",
    "TESTS",
    "ColumnDrift",
    "DriftDetector",
    "DriftResult",
]
