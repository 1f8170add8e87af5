"""DriftDetector: the estimator contract, the default tests, and results equal to scipy's."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats as sps
from scipy.spatial import distance

from conveyor.data.drift import DEFAULT_EFFECT_SIZE_FLOORS, DriftDetector
from conveyor.errors import ConveyorError, InvalidInputError, NotFittedError

TOL = 1e-9


def _mixed(rng: np.random.Generator, n: int, shift: float = 0.0) -> pa.Table:
    return pa.table(
        {
            "amount": rng.normal(loc=shift, size=n),
            "count": rng.poisson(4.0, n),
            "level": rng.integers(0, 3, n),  # numeric with 3 values: categorical
            "flag": rng.random(n) < 0.3,
            "city": pa.array(rng.choice(["ams", "ber", "cph", "dub"], size=n)),
            "tier": pa.array(rng.choice(["gold", "silver"], size=n)).dictionary_encode(),
            "at": pa.array(np.arange(n).astype("datetime64[s]")),
        }
    )


# -- the estimator contract --------------------------------------------------------


def test_init_only_stores_parameters_and_fit_validates_them() -> None:
    detector = DriftDetector(alpha=7.0, tests={"x": "nope"}, bins=0)  # no error yet
    assert (detector.alpha, detector.tests, detector.bins) == (7.0, {"x": "nope"}, 0)
    assert not hasattr(detector, "columns_")
    with pytest.raises(InvalidInputError, match="alpha must be between 0 and 1") as info:
        detector.fit(pa.table({"x": [1.0, 2.0]}))
    assert info.value.context["field"] == "alpha"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tests": {"x": "anova"}}, "tests['x']"),
        ({"tests": "t-test"}, "tests"),
        ({"correction": "bonferroni"}, "correction"),
        ({"drift_share": 0}, "drift_share"),
        ({"bins": 1}, "bins"),
        ({"chunk_rows": 2.5}, "chunk_rows"),
        ({"effect_size_floor": {"psi": 0.1}}, "effect_size_floor['psi']"),
        ({"thresholds": {"jensenshannon": -1}}, "thresholds['jensenshannon']"),
        ({"columns": "x"}, "columns"),
        ({"n_jobs": 0}, "n_jobs"),
    ],
)
def test_bad_parameters_name_their_field(params: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        DriftDetector(**params).fit(pa.table({"x": [1.0, 2.0, 3.0]}))  # type: ignore[arg-type]
    assert info.value.context["field"] == field


def test_score_before_fit_raises_not_fitted() -> None:
    detector = DriftDetector()
    with pytest.raises(NotFittedError, match=r"call fit\(reference\)") as info:
        detector.score(pa.table({"x": [1.0]}))
    assert info.value.code == "not_fitted"
    assert isinstance(info.value, ValueError | AttributeError)
    assert isinstance(info.value, ConveyorError)


def test_fit_returns_self_with_learned_state_ending_in_underscore() -> None:
    rng = np.random.default_rng(0)
    detector = DriftDetector()
    assert detector.fit(_mixed(rng, 500)) is detector
    learned = {k for k in vars(detector) if k.endswith("_")}
    assert {"columns_", "reference_", "schema_", "n_reference_rows_"} <= learned
    assert detector.n_reference_rows_ == 500


def test_a_fitted_detector_pickles_and_scores_the_same() -> None:
    rng = np.random.default_rng(1)
    detector = DriftDetector().fit(_mixed(rng, 2_000))
    current = _mixed(rng, 2_000, shift=0.3)
    clone = pickle.loads(pickle.dumps(detector))
    assert clone.score(current).to_dict() == detector.score(current).to_dict()


# -- which test for which column ------------------------------------------------------


@pytest.mark.parametrize("rows", [300, 5_000])  # both sides of Evidently's 1,000-row cut
def test_default_tests_follow_the_documented_rule_at_every_reference_size(rows: int) -> None:
    rng = np.random.default_rng(rows)
    table = _mixed(rng, rows).append_column("user_id", pa.array([f"u{i}" for i in range(rows)]))
    detector = DriftDetector(max_categories=200).fit(table)
    chosen = {name: model.test for name, model in detector.columns_.items()}
    assert chosen == {
        "amount": "ks",
        "count": "ks",
        "level": "chisquare",
        "flag": "z",
        "city": "chisquare",
        "tier": "z",
        "at": None,  # timestamps are not compared
        "user_id": None,  # an identifier, not a category
    }
    result = detector.score(_mixed(rng, rows).append_column("user_id", table.column("user_id")))
    assert "not compared" in result["at"].describe()
    assert "identifier" in result["user_id"].detail
    # Not compared, so no rates: an identifier's nulls are not a missing-rate change.
    assert result["user_id"].missing_rate_current is None
    assert not result["at"].drifted and not result["user_id"].tested


def test_named_tests_override_the_rule() -> None:
    rng = np.random.default_rng(2)
    detector = DriftDetector(tests={"amount": "psi", "city": "jensenshannon"})
    result = detector.fit(_mixed(rng, 3_000)).score(_mixed(rng, 3_000))
    assert result["amount"].test == "psi" and result["amount"].p_value is None
    assert result["city"].test == "jensenshannon"
    assert result["count"].test == "ks"


def test_impossible_named_tests_are_refused_at_fit() -> None:
    table = pa.table({"s": ["a", "b", "c"], "t": pa.array([0, 1, 2]).cast(pa.timestamp("s"))})
    with pytest.raises(InvalidInputError, match="needs a numeric column"):
        DriftDetector(tests={"s": "ks"}).fit(table)
    with pytest.raises(InvalidInputError, match="cannot be tested"):
        DriftDetector(tests={"t": "chisquare"}).fit(table)
    with pytest.raises(InvalidInputError, match="at most 2"):
        DriftDetector(tests={"s": "z"}).fit(table)
    numbers = pa.table({"x": np.arange(5_000.0)})
    with pytest.raises(InvalidInputError, match="5,000 distinct values: the chisquare test"):
        DriftDetector(tests={"x": "chisquare"}).fit(numbers)
    with pytest.raises(InvalidInputError, match="'nope' not in the reference") as info:
        DriftDetector(columns=["s", "nope"]).fit(table)
    assert info.value.context["columns"] == ["nope"]


# -- results equal scipy's on the same data ---------------------------------------


def test_column_statistics_equal_scipy_on_the_same_values() -> None:
    rng = np.random.default_rng(3)
    ref, cur = _mixed(rng, 20_000), _mixed(rng, 15_000, shift=0.05)
    tests = {"count": "wasserstein", "city": "chisquare", "level": "jensenshannon"}
    result = DriftDetector(tests=tests).fit(ref).score(cur)

    a, b = ref.column("amount").to_numpy(), cur.column("amount").to_numpy()
    ks = sps.ks_2samp(a, b)
    assert result["amount"].statistic == pytest.approx(ks.statistic, abs=TOL)
    assert result["amount"].p_value == pytest.approx(ks.pvalue, abs=TOL)

    a, b = ref.column("count").to_numpy(), cur.column("count").to_numpy()
    expected = sps.wasserstein_distance(a, b) / np.std(a)
    assert result["count"].statistic == pytest.approx(expected, rel=TOL)

    cats = ["ams", "ber", "cph", "dub"]
    table = np.array(
        [
            [np.sum(t.column("city").to_numpy(zero_copy_only=False) == c) for c in cats]
            for t in (ref, cur)
        ]
    )
    chi2 = sps.chi2_contingency(table, correction=False)
    assert result["city"].statistic == pytest.approx(chi2.statistic, rel=TOL)
    assert result["city"].p_value == pytest.approx(chi2.pvalue, abs=TOL)

    levels = [np.bincount(t.column("level").to_numpy(), minlength=3) for t in (ref, cur)]
    js = distance.jensenshannon(levels[0], levels[1], base=2)
    assert result["level"].statistic == pytest.approx(js, rel=TOL)

    flag = [t.column("flag").to_numpy(zero_copy_only=False) for t in (ref, cur)]
    two_by_two = np.array([[np.sum(~f), np.sum(f)] for f in flag])  # False sorts first
    z = sps.chi2_contingency(two_by_two, correction=False)
    assert result["flag"].statistic ** 2 == pytest.approx(z.statistic, rel=TOL)
    assert result["flag"].p_value == pytest.approx(z.pvalue, abs=TOL)


def test_p_values_are_corrected_together_with_benjamini_hochberg() -> None:
    rng = np.random.default_rng(4)
    ref, cur = _mixed(rng, 4_000), _mixed(rng, 4_000, shift=0.08)
    result = DriftDetector().fit(ref).score(cur)
    tested = [c for c in result.columns.values() if c.p_value is not None]
    raw = np.array([c.p_value for c in tested])
    adjusted = sps.false_discovery_control(raw, method="bh")
    np.testing.assert_allclose([c.p_value_adjusted for c in tested], adjusted, rtol=TOL)
    plain = DriftDetector(correction=None).fit(ref).score(cur)
    assert all(c.p_value_adjusted == c.p_value for c in plain.columns.values() if c.p_value)


def test_the_effect_size_floor_keeps_a_large_sample_from_alarming_on_a_negligible_shift() -> None:
    rng = np.random.default_rng(5)
    n = 400_000
    ref = pa.table({"x": rng.normal(size=n)})
    cur = pa.table({"x": rng.normal(loc=0.03, size=n)})  # 0.03 sd: D about 0.012
    col = DriftDetector().fit(ref).score(cur)["x"]
    assert col.p_value is not None and col.p_value < 1e-6  # significant...
    assert col.effect_size is not None and col.effect_size < DEFAULT_EFFECT_SIZE_FLOORS["ks"]
    assert not col.drifted  # ...but negligible
    assert DriftDetector(effect_size_floor={"ks": 0}).fit(ref).score(cur)["x"].drifted


def test_distance_tests_alarm_at_their_threshold() -> None:
    ref = pa.table({"c": ["a"] * 50 + ["b"] * 50})
    cur = pa.table({"c": ["a"] * 62 + ["b"] * 38})
    detector = DriftDetector(tests="jensenshannon")
    col = detector.fit(ref).score(cur)["c"]
    assert col.threshold == 0.1 and col.p_value is None and col.effect_size == col.statistic
    assert col.statistic is not None and col.drifted == (col.statistic >= 0.1)
    lowered = DriftDetector(tests="jensenshannon", thresholds={"jensenshannon": 0.05})
    assert lowered.fit(ref).score(cur)["c"].drifted


# -- missing values, new categories, empty inputs -------------------------------------


def test_nulls_and_nan_are_missing_and_the_tests_use_the_other_values() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=3_000), rng.normal(size=2_000)
    a[:300] = np.nan
    b[600:610] = np.inf
    ref = pa.table({"x": a, "s": pa.array(["u", None, "v"] * 1_000)})
    cur = pa.table(
        {
            "x": pa.array(b, mask=np.arange(b.size) < 500),  # 500 nulls, 10 infinities
            "s": pa.array(["u", "v", None, None] * 500),
        }
    )
    result = DriftDetector().fit(ref).score(cur)
    x = result["x"]
    assert x.missing_rate_reference == pytest.approx(0.1)
    assert x.missing_rate_current == pytest.approx(510 / 2_000)
    expected = sps.ks_2samp(a[300:], np.concatenate([b[500:600], b[610:]]))
    assert x.statistic == pytest.approx(expected.statistic, abs=TOL)
    assert x.p_value == pytest.approx(expected.pvalue, abs=TOL)
    assert (x.reference_values, x.current_values) == (2_700, 1_490)
    assert x.missing_rate_changed
    s = result["s"]
    assert (s.missing_rate_reference, s.missing_rate_current) == (pytest.approx(1 / 3), 0.5)


def test_categories_unseen_in_the_reference_are_counted_and_listed() -> None:
    ref = pa.table({"c": ["a", "b", "c"] * 400, "bin": ["y", "n"] * 600})
    cur = pa.table({"c": ["a", "b", "c", "d"] * 300, "bin": ["y", "n", "maybe"] * 400})
    result = DriftDetector().fit(ref).score(cur)
    c = result["c"]
    assert c.new_categories == ("d",) and c.new_categories_count == 1
    expected = sps.chi2_contingency(
        np.array([[400, 400, 400, 0], [300, 300, 300, 300]]), correction=False
    )
    assert c.statistic == pytest.approx(expected.statistic, rel=TOL)
    assert c.drifted and "unseen in the reference: 'd'" in c.describe()
    # A binary column that gains a category is tested as a whole table.
    assert result["bin"].test == "chisquare" and result["bin"].drifted


def test_empty_inputs_are_clear_errors() -> None:
    empty = pa.table({"x": pa.array([], pa.float64())})
    with pytest.raises(InvalidInputError, match=r"reference .* has no rows"):
        DriftDetector().fit(empty)
    detector = DriftDetector().fit(pa.table({"x": [1.0, 2.0, 3.0]}))
    with pytest.raises(InvalidInputError, match=r"current data .* has no rows"):
        detector.score(empty)


def test_columns_without_values_are_reported_not_compared() -> None:
    ref = pa.table({"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "gone": pa.nulls(6, pa.float64())})
    cur = pa.table({"x": pa.nulls(4, pa.float64()), "gone": [1.0, 2.0, 3.0, 4.0]})
    result = DriftDetector().fit(ref).score(cur)
    assert not result["x"].tested and result["x"].detail == "no values in the current data"
    assert result["x"].missing_rate_current == 1.0
    assert result["gone"].detail == "no values in the reference"
    # A column that became entirely null has drifted, by its missing rate alone.
    assert result["x"].drifted and result["x"].drifted_by == ("missing_rate",)
    assert result["x"].judgment == "drift" and result["x"].describe().startswith("drifted:")
    assert result["gone"].judgment == "not_compared" and not result["gone"].compared
    assert result.share == 1.0 and result.dataset_drift


def test_other_inputs_are_refused_with_the_role_named() -> None:
    with pytest.raises(InvalidInputError, match="reference: expected a pandas or polars"):
        DriftDetector().fit(42)
