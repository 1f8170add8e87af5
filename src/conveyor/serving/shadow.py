"""How a shadow version's answer is compared with the answer the caller got.

Numbers agree within a tolerance, as :func:`math.isclose` and
:func:`numpy.isclose` define it: ``|shadow - primary| <= ATOL + RTOL * |primary|``
for every value. Exact comparison made regressions never agree: a float32
ONNX copy answers 453452.34 where its float64 parent answers 453452.36, a
relative difference of 4e-8. Labels, strings and booleans agree only when
equal; answers of different shapes never agree.

Each comparison also says how far apart the numbers were (the
``prediction.shadow`` event's ``max_abs_diff``, ``mean_abs_diff`` and
``differing``, and the ``conveyor_shadow_abs_diff`` histogram), so a shadow
that disagrees shows by how much, not only that it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ATOL", "RTOL", "ShadowComparison", "compare"]

#: Relative tolerance: a float32 copy of a float64 model (about 1e-7 apart) agrees.
RTOL = 1e-5
#: Absolute tolerance, for values near zero (a probability of 1e-9 against 0).
ATOL = 1e-6


@dataclass(frozen=True, slots=True)
class ShadowComparison:
    """Whether two answers agree, and the distribution of their absolute differences."""

    agree: bool
    #: How many numbers were compared (0 for labels, strings, or shapes that differ).
    compared: int = 0
    #: How many of them are outside the tolerance.
    differing: int = 0
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "agree": self.agree,
            "compared": self.compared,
            "differing": self.differing,
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
        }


def compare(
    primary: Any, shadow: Any, *, rtol: float = RTOL, atol: float = ATOL
) -> ShadowComparison:
    """``shadow`` against ``primary`` (JSON-ready answers: lists, numbers, strings, None)."""
    import numpy as np

    if primary is None or shadow is None:
        return ShadowComparison(primary is shadow)
    try:
        a = np.asarray(primary)
        b = np.asarray(shadow)
    except ValueError:  # ragged lists
        return ShadowComparison(primary == shadow)
    if a.shape != b.shape:
        return ShadowComparison(False)
    numeric = "iuf"
    if a.dtype.kind not in numeric or b.dtype.kind not in numeric:
        return ShadowComparison(bool(primary == shadow))
    if a.size == 0:
        return ShadowComparison(True)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(b64 - a64)
    close = np.isclose(b64, a64, rtol=rtol, atol=atol, equal_nan=True)
    finite = diff[np.isfinite(diff)]
    return ShadowComparison(
        bool(close.all()),
        compared=int(a.size),
        differing=int((~close).sum()),
        max_abs_diff=float(finite.max()) if finite.size else None,
        mean_abs_diff=float(finite.mean()) if finite.size else None,
    )
