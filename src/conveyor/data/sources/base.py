"""What a source is and what reading one gives back.

A :class:`Source` reads a batch as an :class:`Extract`: an Arrow table, a
JSON description of where it came from (kept with the dataset version), and
the new high-water mark when the source is incremental. ``read(after=x)``
returns only the rows whose watermark column is strictly greater than ``x``.

Sources are plain parameter holders: constructing one opens nothing, and
each ``read`` opens and closes what it needs (a file, a connection pool, an
HTTP client), so a source can live in a long-running scheduler safely.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from conveyor.data.frames import FrameKind, from_arrow

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["BaseSource", "Extract", "Source"]


@dataclass(frozen=True, slots=True)
class Extract:
    """One batch read from a source.

    ``watermark`` is the largest value of the watermark column among these
    rows (None when the source is not incremental or nothing new arrived):
    store it only once the rows are safely stored downstream
    (:func:`conveyor.data.sources.incremental` does that).
    """

    table: pa.Table
    source: dict[str, Any] = field(default_factory=dict)
    watermark: Any | None = None

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)

    def frame(self, kind: FrameKind = "pandas") -> Any:
        """The rows as a pandas or polars DataFrame (or the Arrow table)."""
        return from_arrow(self.table, kind)


@runtime_checkable
class Source(Protocol):
    """Anything that reads batches: CSV, Parquet, SQL, HTTP, or a user's own class."""

    name: str
    watermark_column: str | None

    def describe(self) -> dict[str, Any]:
        """Where the data comes from, as JSON, with passwords and tokens redacted."""
        ...

    def read(self, *, after: Any | None = None) -> Extract:
        """Every row, or with ``after`` only rows whose watermark column is greater."""
        ...

    def read_frame(self, kind: FrameKind = "pandas", *, after: Any | None = None) -> Any:
        """:meth:`read` as a pandas or polars DataFrame (or an Arrow table)."""
        ...


class BaseSource(ABC):
    """The shared half of the built-in sources: naming, frames and the extract's record."""

    kind: str = "source"
    name: str
    watermark_column: str | None

    @abstractmethod
    def describe(self) -> dict[str, Any]: ...

    @abstractmethod
    def read(self, *, after: Any | None = None) -> Extract: ...

    def read_frame(self, kind: FrameKind = "pandas", *, after: Any | None = None) -> Any:
        return from_arrow(self.read(after=after).table, kind)

    def __repr__(self) -> str:
        details = ", ".join(
            f"{key}={value!r}"
            for key, value in self.describe().items()
            if key not in ("kind", "name") and value is not None
        )
        return f"<{type(self).__name__} {self.name!r} {details}>"

    def _where(self) -> str:
        """How errors name this source."""
        return f"{self.kind} source {self.name!r}"

    def _check_after(self, after: Any | None) -> None:
        from conveyor.errors import InvalidInputError

        if after is not None and self.watermark_column is None:
            raise InvalidInputError(
                f"{self._where()} has no watermark_column, so it cannot read rows after "
                f"{after!r}; set watermark_column to read incrementally",
                field="watermark_column",
            )

    def _extract(
        self,
        table: pa.Table,
        *,
        after: Any | None,
        filtered: bool,
        details: dict[str, Any] | None = None,
    ) -> Extract:
        """Apply the watermark (unless the read already did: ``filtered``) and record it."""
        from conveyor.data.sources.tables import filter_after, high_water, plain, require_columns

        column = self.watermark_column
        description = {**self.describe(), **(details or {})}
        watermark = None
        if column is not None:
            require_columns(table.schema, [column], where=self._where())
            if after is not None and not filtered and table.num_rows:
                table = filter_after(table, column, after, where=self._where())
            watermark = high_water(table, column)
            description["watermark"] = {
                "column": column,
                "after": plain(after),
                "through": plain(watermark),
            }
        description["rows"] = int(table.num_rows)
        return Extract(table=table, source=description, watermark=watermark)
