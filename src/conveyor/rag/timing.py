"""Stage timings as RAG reports them: milliseconds, rounded to the microsecond."""

from __future__ import annotations

import time

__all__ = ["ms_since"]


def ms_since(t0: float) -> float:
    """Milliseconds since ``t0`` (a :func:`time.perf_counter` reading), to 3 decimals."""
    return round((time.perf_counter() - t0) * 1000.0, 3)
