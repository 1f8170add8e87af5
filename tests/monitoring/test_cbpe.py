"""CBPE: a calibrated classifier's accuracy estimated without labels, against the realized
accuracy, on seeded simulations (no server: the estimator alone)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from conveyor.errors import InvalidInputError, NotFittedError
from conveyor.monitoring.cbpe import CBPE, isotonic_fit

WEIGHTS = np.array([1.5, -1.0, 0.5, 0.0])


def draw(
    rng: np.random.Generator, n: int, shift: np.ndarray | float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs moved by ``shift`` (covariate shift); the label's law given the inputs stays."""
    x = rng.normal(size=(n, WEIGHTS.size)) + shift
    p = 1.0 / (1.0 + np.exp(-(x @ WEIGHTS - 0.2)))
    return x, (rng.random(n) < p).astype(np.int64)


def test_the_accuracy_estimate_is_within_two_points_under_covariate_shift_across_20_seeds() -> None:
    errors, moves = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x_train, y_train = draw(rng, 5_000)
        x_ref, y_ref = draw(rng, 10_000)
        # Half the seeds move the inputs one way, half the other (away from the boundary:
        # the realized accuracy rises by 3 to 7 points).
        direction = 1.0 if seed % 2 else -1.0
        x_live, y_live = draw(rng, 20_000, shift=direction * np.array([0.8, -0.5, 0.0, 0.4]))
        model = LogisticRegression().fit(x_train, y_train)
        estimator = CBPE().fit(model.predict_proba(x_ref), y_ref, classes=model.classes_)
        found = estimator.realized(model.predict_proba(x_live), y_live)
        errors.append(found["accuracy_error"])
        moves.append(found["accuracy"] - estimator.reference_.accuracy)
        assert found["estimate"]["accuracy_std"] < 0.005
        assert abs(found["roc_auc_error"]) < 0.02, (seed, found)
    assert max(abs(e) for e in errors) <= 0.02, errors
    # The shift moved the realized accuracy by more than the estimate's error: the reference
    # accuracy would be a worse guess than the estimate.
    assert np.mean(np.abs(moves)) > 2 * np.mean(np.abs(errors)), (moves, errors)


def test_an_overconfident_model_is_recalibrated_on_the_reference() -> None:
    rng = np.random.default_rng(7)
    x_ref, y_ref = draw(rng, 20_000)
    x_live, y_live = draw(rng, 20_000, shift=np.array([0.5, 0.5, 0.0, 0.0]))
    model = LogisticRegression().fit(x_ref, y_ref)
    # Scores pushed towards 0 and 1: the model claims more than it knows.

    def sharpen(s: np.ndarray) -> np.ndarray:
        return np.asarray(1 / (1 + np.exp(-3 * np.log(s / (1 - s)))))

    overconfident = sharpen(model.predict_proba(x_live)[:, 1])
    reference = sharpen(model.predict_proba(x_ref)[:, 1])
    realized = float(np.mean((overconfident >= 0.5) == y_live))
    trusted = CBPE(calibration="none").fit(reference, y_ref).estimate(overconfident)
    calibrated = CBPE().fit(reference, y_ref).estimate(overconfident)
    assert trusted.accuracy - realized > 0.05  # taken at its word, it overestimates
    assert abs(calibrated.accuracy - realized) < 0.02


def test_multiclass_and_string_classes() -> None:
    rng = np.random.default_rng(3)
    centers = np.array([[0, 0], [1.5, 0], [0, 1.5]])

    def sample(n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, n)
        return centers[y] + rng.normal(size=(n, 2)) + shift, np.array(["a", "b", "c"])[y]

    x_ref, y_ref = sample(6_000)
    x_live, y_live = sample(6_000, shift=0.3)
    model = LogisticRegression().fit(x_ref, y_ref)
    found = (
        CBPE()
        .fit(model.predict_proba(x_ref), y_ref, classes=model.classes_)
        .realized(model.predict_proba(x_live), y_live)
    )
    assert abs(found["accuracy_error"]) < 0.03 and abs(found["roc_auc_error"]) < 0.03
    assert found["estimate"]["classes"] == ["a", "b", "c"] and found["f1"] is None


def test_bad_input_is_refused_with_the_field_named() -> None:
    with pytest.raises(NotFittedError):
        CBPE().estimate([0.5, 0.6])
    with pytest.raises(InvalidInputError) as info:
        CBPE(calibration="platt").fit([0.2, 0.8], [0, 1])  # type: ignore[arg-type]
    assert info.value.context["field"] == "calibration"
    with pytest.raises(InvalidInputError) as info:
        CBPE().fit([0.2, 0.8, 0.4], [0, 1])
    assert info.value.context["field"] == "labels"
    with pytest.raises(InvalidInputError) as info:
        CBPE().fit([0.2, float("nan")], [0, 1])
    assert info.value.context["field"] == "scores"
    with pytest.raises(InvalidInputError) as info:
        CBPE().fit([[0.2, 0.8], [0.6, 0.4]], ["x", "z"], classes=["x", "y"])
    assert "not among the classes" in info.value.message
    fitted = CBPE().fit([0.1, 0.9, 0.3, 0.7], [0, 1, 0, 1])
    with pytest.raises(InvalidInputError):
        fitted.estimate(np.zeros((0,)))
    with pytest.raises(InvalidInputError):
        fitted.estimate(np.full((3, 3), 1 / 3))


def test_isotonic_fit_is_monotone_and_matches_the_rates() -> None:
    rng = np.random.default_rng(1)
    s = rng.random(50_000)
    y = (rng.random(50_000) < s**2).astype(float)  # true probability s squared
    x, fitted = isotonic_fit(s, y)
    assert np.all(np.diff(fitted) >= 0)
    grid = np.array([0.2, 0.5, 0.8])
    assert np.allclose(np.interp(grid, x, fitted), grid**2, atol=0.04)
