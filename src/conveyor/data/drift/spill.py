"""Sorted reference columns kept on disk between ``fit`` and ``score``.

The exact tests (KS, Wasserstein) need the reference column sorted at every
``score``. Keeping it in memory would make the detector grow with the rows;
reading and sorting it again costs a Parquet decode and a sort per column
per score. ``fit`` sorts it anyway, so it writes the sorted values to a
private temporary folder (``.npy``, removed when the detector is garbage
collected or the interpreter exits) and ``score`` maps them back: one
column at a time, from the page cache. Small columns are not worth a file.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from conveyor.data.drift.stats import Floats

__all__ = ["SortedSpill"]


class SortedSpill:
    """A folder of sorted float64 columns, owned by one fitted detector."""

    #: Below this many values re-reading and sorting is cheaper than a file.
    MIN_VALUES = 1 << 16

    def __init__(self) -> None:
        self.folder: Path | None = None
        self._lock = threading.Lock()
        self._cleanup: weakref.finalize[Any, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A copy (a pickle) does not own the folder: its columns fall back to
        # re-reading the reference once the owner has removed the files.
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def put(self, values: Floats) -> str | None:
        """Store sorted ``values``; the path to pass to :meth:`get`, or None if not worth it."""
        if values.size < self.MIN_VALUES:
            return None
        with self._lock:
            if self.folder is None:
                self.folder = Path(tempfile.mkdtemp(prefix="conveyor-drift-"))
                self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, True)
        path = self.folder / f"{uuid.uuid4().hex}.npy"
        np.save(path, values, allow_pickle=False)
        return str(path)

    @staticmethod
    def get(path: str | None) -> Floats | None:
        """The stored column (memory-mapped, read-only), or None if it is gone."""
        if path is None:
            return None
        try:
            values: Floats = np.load(path, mmap_mode="r", allow_pickle=False)
        except OSError:
            return None
        return values

    def remove(self) -> None:
        """Delete the folder now (a refit replaces it)."""
        if self._cleanup is not None:
            self._cleanup()
