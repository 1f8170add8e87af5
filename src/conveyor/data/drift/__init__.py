"""Drift statistics: has the data moved away from a reference?

::

    detector = DriftDetector().fit("train.parquet")       # or a pyarrow/pandas/polars table
    result = detector.score("2024-06.parquet")
    result.dataset_drift, result.drifted_columns, result["amount"].judgment
    report = result.to_report("dataset:transactions")     # a conveyor.checks.Report

    DriftDetector(important=["amount"])                   # one drifted column fails the report

Tests
-----
``ks``
    Two-sample Kolmogorov-Smirnov on the exact samples (numeric).
    Effect size: the KS statistic D, the largest gap between the two CDFs.
``chisquare``
    Chi-squared test of homogeneity on the 2 x k table of category counts,
    without Yates' correction. Effect size: Cramér's V of the two
    distributions as if both samples were the same size (plain V shrinks as
    the sizes grow unequal, so a small window would hide its drift), with
    Bergsma's (2013) bias correction (plain V sits near ``sqrt(k / 2n)`` with
    no drift at all: 0.07 for 50 categories at 5,000 rows).
``z``
    Two-sided z-test for two proportions (binary columns). Effect size: the
    absolute log odds ratio, with Woolf's standard error (0.5 added to every
    cell when one is empty).
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
  with an **effect-size floor** instead, judged by a minimum-effect test
  (see "The judgment" below). Default floors: ks D 0.02 (a 0.05
  standard-deviation mean shift of a normal) and chisquare V 0.025, about a
  quarter of Cohen's "small"; z: a log odds ratio of 0.04 (the odds moving
  by 4%).
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

The judgment
------------
Each p-value test answers two questions, each corrected across the columns
with Benjamini-Hochberg: did the column change at all (``H0``: no change),
and is the change above the floor (the **minimum-effect test**, ``H0``:
effect <= floor)? A column drifts only when both reject: its effect is
*shown* above the floor, not merely estimated above it. Estimated right at
a floor, the estimate lands on either side from run to run (a lognormal whose
mean moves 5%, KS D 0.0195, was flagged in 73% of runs); the minimum-effect
test flags an effect at the floor in at most about ``alpha`` of runs and one
clearly above it almost always. The one-sided lower confidence bound of the
effect, at the level the correction leaves (``min_effect_level``), is
reported as ``effect_size_lower``; it clears the floor exactly when the
minimum-effect test rejects:

* ks: ``D - sqrt(ln(1 / level) (n + m) / (2 n m))``, Smirnov's one-sided
  bound on how far the sample CDFs stray (conservative: the normal
  approximation at the maximising point is not valid, the maximum picks up
  noise and flagged 12-22% of runs at the floor);
* chisquare: the noncentral chi-squared distribution of the statistic, with
  noncentrality ``N V**2`` (``N = 4 n m / (n + m)``), inverted: it accounts
  for the number of categories, so 50 categories at 5,000 rows cannot clear
  a floor on noise;
* z: ``|log OR| - z(level) * se``.

**Why the log odds for rates.** Cohen's h under a fixed floor ignores the
base rate: a boolean moving 10% -> 11% at 50,000 rows was significant in
98% of runs and flagged in none, and a rare flag moving 1% -> 1.5% was
flagged 22% of the time, while these are the fraud and error rates users
watch. The log odds ratio is relative where rates are small (1% -> 1.5% is
0.41, about the log of the risk ratio), tightens to about four times the
difference in the middle (50% -> 51% is 0.04), and, unlike the risk ratio,
does not depend on which of the two values is counted (the log odds ratio
of "not fraud" is the same number). The floor, 0.04, is the odds moving by
4%: 10% -> 10.4%, 1% -> 1.04%, 50% -> 51%; a quarter of Cohen's "small"
(0.09) would let a 10% relative rise of an error rate pass.

Each column gets a ``judgment``: ``drift``; ``significant_below_floor``
(a significant change not shown to reach the floor: negligible, or too
close to the floor to tell, ``near_floor``); ``no_drift``; ``not_compared``.

Dataset level, the report policy, schema and rates
---------------------------------------------------
The dataset drifted when the share of compared columns that drifted is at
least ``drift_share`` (0.5, as Evidently). The report
(:meth:`DriftResult.to_report`) fails on dataset drift and also on any
drifted column marked **important** (``important=``: by default a model's
most important features, see :mod:`.importance`), whose column check is
then an error; other drifted columns and ``significant_below_floor`` ones
are warnings. The column check's ``observed`` is ``{"judgment",
"effect_size", "effect_size_lower", "near_floor", "important"}``: the
check statuses stay pass / warn / fail, so every renderer and reader of
reports keeps working, and the judgment is a field readers can rely on.

The result also carries the schema change against the reference (columns
added, removed, retyped: :func:`conveyor.data.schema.diff_schema`), and per
column the missing rate (null, NaN, +-inf) and the outlier rate (outside
the reference's 1.5 IQR fences) in both samples. A rate change is judged
like a binary column (two-proportion z-test, the log-odds floor and the
minimum-effect test, corrected across the rates). A changed **missing
rate is drift of the column** (``drifted_by`` says ``missing_rate``): a
column whose values keep their distribution while a tenth of them go
missing has drifted. A changed outlier rate is a warning.

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
