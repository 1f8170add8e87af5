"""Which columns matter: a model's most important features, for the drift report policy.

A drift report fails when the dataset drifted (a share of its columns) or
when one column marked important drifted. For a comparison made for a
model, the important columns default to the model's most important
features: the fewest features, by decreasing importance, that make up half
of the total importance, at most five (:func:`important_features`).

Where the importances come from (:func:`registered_importances`), first
found wins:

1. the version's tag ``feature_importance``, a mapping ``{feature: weight}``
   recorded at registration (any model, any library);
2. the fitted model's own ``feature_importances_`` (trees, boosting) or the
   absolute ``coef_`` summed over classes (linear models), the last step's
   for a scikit-learn ``Pipeline``. Names come from ``feature_names_in_``,
   else the signature's inputs; importances over transformed features
   (``num__amount``, ``cat__city_ams`` from ``get_feature_names_out``) are
   summed back onto the input column they came from.

This module reads what a registry hands back by duck typing (``.tags``,
``.signature``, ``.model``) and imports no other capability.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from conveyor.errors import InvalidInputError

__all__ = [
    "IMPORTANCE_TAG",
    "importances_of",
    "important_features",
    "registered_importances",
]

#: The registry tag a version may carry: ``{feature: importance}``.
IMPORTANCE_TAG = "feature_importance"
#: Default policy: the features making up this share of the total importance...
IMPORTANT_SHARE = 0.5
#: ...and at most this many.
IMPORTANT_TOP = 5


def important_features(
    importances: Mapping[str, float],
    *,
    share: float = IMPORTANT_SHARE,
    top: int = IMPORTANT_TOP,
    among: Sequence[str] | None = None,
) -> list[str]:
    """The fewest most important features whose importances reach ``share`` of the total.

    At most ``top`` of them; ties keep the mapping's order. ``among``
    restricts the choice to those names (the columns a comparison can see:
    a model may use features the data set does not hold). Features with a
    zero, negative or non-finite importance are never chosen.
    """
    if not 0.0 < share <= 1.0:
        raise InvalidInputError(f"share must be in (0, 1], got {share!r}", field="share")
    if top < 1:
        raise InvalidInputError(f"top must be >= 1, got {top!r}", field="top")
    allowed = set(among) if among is not None else None
    weights = [
        (name, float(value))
        for name, value in importances.items()
        if (allowed is None or name in allowed) and math.isfinite(float(value)) and value > 0
    ]
    total = sum(w for _, w in weights)
    if total <= 0.0:
        return []
    chosen: list[str] = []
    covered = 0.0
    for name, weight in sorted(weights, key=lambda item: -item[1]):
        if len(chosen) >= top or covered >= share * total:
            break
        chosen.append(name)
        covered += weight
    return chosen


def importances_of(model: Any, names: Sequence[str] | None = None) -> dict[str, float] | None:
    """``{input column: importance}`` of a fitted model, or None when it has none.

    A scikit-learn ``Pipeline``'s last step is read; its importances are over
    the features the earlier steps produce, which are mapped back to the
    input columns when their names show it.
    """
    import numpy as np

    estimator = model
    steps = getattr(model, "steps", None)
    if isinstance(steps, list) and steps:
        estimator = steps[-1][1]
    raw = getattr(estimator, "feature_importances_", None)
    if raw is None:
        coef = getattr(estimator, "coef_", None)
        if coef is None:
            return None
        values = np.abs(np.asarray(coef, dtype=np.float64))
        raw = values.sum(axis=0) if values.ndim == 2 else values
    weights = np.asarray(raw, dtype=np.float64).ravel()
    inputs = _input_names(model, names)
    if inputs is None:
        return None
    if len(inputs) == weights.size:
        return {name: float(w) for name, w in zip(inputs, weights, strict=True)}
    produced = _produced_names(model)
    if produced is None or len(produced) != weights.size:
        return None
    summed: dict[str, float] = {}
    for feature, weight in zip(produced, weights, strict=True):
        column = _source_column(feature, inputs)
        if column is not None:
            summed[column] = summed.get(column, 0.0) + float(weight)
    return summed or None


def registered_importances(
    version: Any, load: Callable[[], Any] | None = None
) -> dict[str, float] | None:
    """Importances of a registered model version: its tag, else its loaded model's own.

    ``version`` has ``tags`` and ``signature`` (a registry's ModelVersion);
    ``load`` returns the loaded model (something with ``.model``), and is
    only called when the tag is absent.
    """
    tagged = (getattr(version, "tags", None) or {}).get(IMPORTANCE_TAG)
    if tagged is not None:
        if not isinstance(tagged, Mapping) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in tagged.values()
        ):
            raise InvalidInputError(
                f"tag {IMPORTANCE_TAG!r} must map feature names to numbers, got {tagged!r}",
                field=IMPORTANCE_TAG,
            )
        return {str(k): float(v) for k, v in tagged.items()}
    if load is None:
        return None
    loaded = load()
    signature = getattr(version, "signature", None) or {}
    names = [c["name"] for c in signature.get("inputs", []) if isinstance(c, Mapping)]
    return importances_of(getattr(loaded, "model", loaded), names or None)


def _input_names(model: Any, names: Sequence[str] | None) -> list[str] | None:
    fitted = getattr(model, "feature_names_in_", None)
    if fitted is not None:
        return [str(n) for n in fitted]
    return list(names) if names else None


def _produced_names(model: Any) -> list[str] | None:
    """Names of the features a Pipeline's last step sees (``get_feature_names_out``)."""
    steps = getattr(model, "steps", None)
    if not isinstance(steps, list) or len(steps) < 2:
        return None
    try:
        out = model[:-1].get_feature_names_out()
    except Exception:  # any step may lack it: then the names are unknown
        return None
    return [str(n) for n in out]


def _source_column(feature: str, inputs: Sequence[str]) -> str | None:
    """The input column a transformed feature comes from: ``cat__city_ams`` -> ``city``."""
    bare = feature.split("__", 1)[1] if "__" in feature else feature
    best: str | None = None
    for column in inputs:
        if (bare == column or bare.startswith(f"{column}_")) and (
            best is None or len(column) > len(best)
        ):
            best = column
    return best
