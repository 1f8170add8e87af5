"""Batch scoring: a model version over files, a query or a data set, in resumable partitions.

``score_batch(project, "fraud@champion", input=..., output=...)`` and ``conveyor score
batch``; see ``docs/scoring.md``. Importing this package imports neither Arrow nor the
engines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor._lazy import lazy_exports

if TYPE_CHECKING:
    from conveyor.scoring.batch import BatchResult, Progress, score_batch

__all__ = ["BatchResult", "Progress", "score_batch"]

_HOMES = {name: ".batch" for name in __all__}

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
