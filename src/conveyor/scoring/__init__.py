"""Batch scoring: a model version over files, a query or a data set, in resumable partitions.

``score_batch(project, "fraud@champion", input=..., output=...)`` and ``conveyor score
batch``; see ``docs/scoring.md``. Importing this package imports neither Arrow nor the
engines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.scoring.batch import BatchResult, Progress, score_batch

__all__ = ["BatchResult", "Progress", "score_batch"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from conveyor.scoring import batch

        return getattr(batch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
