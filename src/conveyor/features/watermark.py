"""Where each view's materialization stands: its watermark, and the checkpoint of a run.

A row's *position* is its created time, or its event time when the view has no created
time (or the row's is null), as nanoseconds since 1970 UTC (exact for any timestamp
unit). Rows are written in chunks sorted by position, and a chunk never ends between
two rows of the same position, so "every row at or before P is written" is a
statement a single number can make:

- the **watermark**: every row at or before it was written by a finished run;
- the **checkpoint** of a run under way: where its last written chunk ended.

A run claims the view by writing a fresh ``run_token``; each checkpoint is written
only while that token is still the view's (a compare-and-set), so of two runs of one
view the later one wins and the earlier one stops with :class:`ConcurrentUpdateError`
at its next chunk. A run that finds a token left behind (its process died) takes the
view over and continues from that run's checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from conveyor.errors import ConcurrentUpdateError

if TYPE_CHECKING:
    from conveyor.features.settings import ViewSpec
    from conveyor.store.database import MetadataStore

__all__ = ["Mode", "Run", "Standing", "definition_digest", "from_ns", "standing", "to_ns"]

Mode = Literal["incremental", "full"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ns(moment: datetime) -> int:
    """Nanoseconds since 1970 of an aware (or naive: UTC) datetime."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def from_ns(ns: int | None) -> datetime | None:
    """The UTC datetime of a position (to the microsecond), None for None."""
    return None if ns is None else _EPOCH + timedelta(microseconds=ns // 1000)


def definition_digest(view: ViewSpec) -> str:
    """The digest of a view's definition: a changed one makes the next run full."""
    text = json.dumps(view.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Standing:
    """What is stored for one view (all None/0 for a view never materialized)."""

    view: str
    definition: str | None
    watermark: int | None
    run_token: str | None
    run_mode: str | None
    run_from: int | None
    checkpoint: int | None
    run_chunks: int
    run_rows: int

    @property
    def interrupted(self) -> bool:
        """A run started and never finished (its process died, or it is still going)."""
        return self.run_token is not None


def standing(store: MetadataStore, view: str) -> Standing:
    """The stored standing of ``view``."""
    from conveyor.features.tables import MaterializationRecord as R

    with store.read() as session:
        row = session.get(R, view)
        if row is None:
            return Standing(view, None, None, None, None, None, None, 0, 0)
        return Standing(
            view,
            row.definition,
            row.watermark,
            row.run_token,
            row.run_mode,
            row.run_from,
            row.checkpoint,
            row.run_chunks,
            row.run_rows,
        )


@dataclass(slots=True)
class Run:
    """One run of one view, between :meth:`begin` and :meth:`finish`."""

    store: MetadataStore
    view: str
    token: str
    mode: Mode
    #: The position rows are read after (None: from the start).
    start: int | None
    #: The watermark before the run (None: none).
    watermark_before: int | None
    #: Whether this run continues one that died.
    resumed: bool
    #: Chunks and rows the run it continues had written (0 for a new run).
    chunks_before: int
    rows_before: int
    #: Where the run it continues had written up to (None for a new run).
    resumed_at: int | None

    @classmethod
    def begin(
        cls,
        store: MetadataStore,
        view: str,
        spec: ViewSpec,
        mode: Mode,
        lateness: timedelta,
    ) -> Run:
        """Claim ``view`` and decide where to read from.

        - a ``full`` run reads everything and resets the watermark;
        - an ``incremental`` run continues a run that died (from its checkpoint), or
          reads what is after the watermark minus ``lateness``; with no watermark, or
          a definition changed since, it is a full run.
        """
        from conveyor.features.tables import MaterializationRecord as R
        from conveyor.store.types import utcnow

        digest = definition_digest(spec)
        token = uuid.uuid4().hex
        with store.session() as session:
            row = session.get(R, view, with_for_update=True)
            if row is None:
                row = R(view=view, definition=digest, watermark=None, run_chunks=0, run_rows=0)
                session.add(row)
            before = row.watermark if row.definition == digest else None
            resumed = (
                mode == "incremental" and row.run_token is not None and row.definition == digest
            )
            resumed_at = None
            if resumed:
                start = resumed_at = row.checkpoint
                if start is None:
                    start = row.run_from
                mode = "full" if row.run_mode == "full" else "incremental"
                chunks, rows = row.run_chunks, row.run_rows
            else:
                if mode == "incremental" and before is None:
                    mode = "full"
                lag = lateness // timedelta(microseconds=1) * 1000
                start = None if mode == "full" or before is None else before - lag
                chunks, rows = 0, 0
                row.run_mode = mode
                row.run_from = start
                row.checkpoint = None
                row.run_chunks = 0
                row.run_rows = 0
                row.started_at = utcnow()
                if mode == "full":
                    row.watermark = None  # a full run resets it
            row.definition = digest
            row.run_token = token
            row.updated_at = utcnow()
        return cls(store, view, token, mode, start, before, resumed, chunks, rows, resumed_at)

    def checkpoint(self, position: int, chunks: int, rows: int) -> None:
        """Record that every row at or before ``position`` is written (``chunks`` and
        ``rows`` in all, counting those of the run this one continues)."""
        self._update(checkpoint=position, run_chunks=chunks, run_rows=rows)

    def finish(self, high: int | None) -> int | None:
        """End the run: the watermark becomes the highest position written (kept when
        nothing was newer); the new watermark."""
        from conveyor.store.types import utcnow

        after = self.watermark_before if self.mode == "incremental" else None
        for written in (self.resumed_at, high):
            if written is not None and (after is None or written > after):
                after = written
        self._update(
            watermark=after,
            run_token=None,
            checkpoint=None,
            run_from=None,
            finished_at=utcnow(),
        )
        return after

    def _update(self, **values: object) -> None:
        import sqlalchemy as sa

        from conveyor.features.tables import MaterializationRecord as R
        from conveyor.store.types import utcnow

        with self.store.session() as session:
            done = session.execute(
                sa.update(R)
                .where(R.view == self.view, R.run_token == self.token)
                .values(updated_at=utcnow(), **values)
            )
            if getattr(done, "rowcount", 1) != 1:
                raise ConcurrentUpdateError(
                    f"another materialization of view {self.view!r} took it over; this one "
                    "stops (the other continues from where this one was)",
                    view=self.view,
                )
