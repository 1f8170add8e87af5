"""Compaction: the event log copied, in ``seq`` order, into hourly Parquet partitions.

::

    from conveyor.monitoring import compact

    done = compact(project)          # conveyor events compact
    done.events, done.files, done.last_seq

A run claims the copy (a fresh token in ``monitoring_compaction``), removes what a
run that died left behind, finds the log's settled horizon (every seq at or below it
committed or never to be: :meth:`SqlEventLog.settled_seq`) and copies
``(checkpoint, horizon]`` in batches of ``batch_events``. For each batch:

1. read the rows in seq order, promote payload fields (:mod:`.columnar`);
2. write one file per (kind, hour) partition, named ``<first_seq>-<last_seq>``, each
   durably (temporary name, fsync, rename, fsync of the folder);
3. in one store transaction, and only while the run's token is still the copy's:
   list the files in ``monitoring_files`` and move the checkpoint to the batch's end.

Step 2 also writes, beside each file of ``prediction`` and ``prediction.failed`` events,
its per-minute rollup (:mod:`.rollups`), durably and before step 3.

What a crash leaves, and how the next run deals with it:

- during 1 or 2: temporary files, and perhaps some of the batch's files under their
  final names. None is listed and each holds seqs above the checkpoint, so no query
  reads it, and the next run deletes every file whose first seq is above the
  checkpoint before it writes (the same batch, read again, gives the same names:
  they would be overwritten anyway);
- after 3: nothing to do, the batch is committed.

So the copy never holds an event twice nor misses one: an event is in the copy once
the transaction of step 3 that lists its file commits, and in no other file that any
reader looks at. Two runs at once: the later claim wins, the earlier one stops with
:class:`~conveyor.errors.ConcurrentUpdateError` at its next commit (its files are
never listed).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from conveyor.errors import ConcurrentUpdateError, InvalidInputError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from conveyor.events.sql import SqlEventLog
    from conveyor.monitoring.settings import CompactionSpec
    from conveyor.project import Project

__all__ = ["LOG", "Compaction", "Progress", "compact", "copy_root"]

#: The name of the event log's copy in ``monitoring_compaction``.
LOG = "events"

Phase = Literal["start", "file", "batch", "done"]


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run is: ``start`` (horizon known), ``file`` (one more file durably written,
    not yet committed), ``batch`` (a batch committed), ``done``."""

    phase: Phase
    last_seq: int
    horizon: int
    events: int
    files: int
    batches: int
    path: str | None = None


@dataclass(frozen=True, slots=True)
class Compaction:
    """What a run did: events and files it added, the checkpoint before and after."""

    events: int
    files: int
    batches: int
    first_seq: int
    last_seq: int
    horizon: int
    removed: int
    seconds: float
    total_events: int
    total_files: int
    paths: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["events_per_s"] = round(self.events / self.seconds, 1) if self.seconds else None
        return data


def copy_root(project: Project) -> Path:
    """The local folder holding the copy's ``events/`` folder: the artifact store's root."""
    store = project.artifacts
    if store.url.scheme != "file":
        raise InvalidInputError(
            f"the event log's columnar copy is written to a local artifact store for now "
            f"(file://...); this project's is {store.url}",
            field="artifacts",
        )
    return Path(store.root)


def sql_log(project: Project) -> SqlEventLog:
    """The project's event log, if it is one compaction can read (SQLite, PostgreSQL)."""
    from conveyor.events.sql import SqlEventLog

    log = project.events
    if not isinstance(log, SqlEventLog):
        raise InvalidInputError(
            f"the columnar copy reads SQL event logs (sqlite://, postgresql://); this "
            f"project's is {log.url}",
            field="events",
        )
    return log


def compact(
    project: Project,
    *,
    batch_events: int | None = None,
    settle_timeout: float | None = None,
    max_batches: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    actor: str | None = None,
) -> Compaction:
    """Copy the events committed since the last run into the Parquet copy (see the module).

    ``batch_events`` and ``settle_timeout`` default to ``monitoring.compaction`` in the
    spec; ``max_batches`` stops after that many batches (the rest waits for the next run).
    A run that copied or removed something writes a ``monitoring.compacted`` event (by
    ``actor``), which the next run copies like any other; a run that copied only such
    events writes none, so an idle log comes to rest.
    """
    import duckdb

    from conveyor.monitoring.events import EVENTS_COMPACTED
    from conveyor.monitoring.settings import monitoring_of

    settings: CompactionSpec = monitoring_of(project.spec).compaction
    batch = batch_events if batch_events is not None else settings.batch_events
    timeout = settle_timeout if settle_timeout is not None else settings.settle_timeout_s
    if not isinstance(batch, int) or batch < 1:
        raise InvalidInputError(
            f"batch_events must be a positive integer, got {batch!r}", field="batch_events"
        )
    log = sql_log(project)
    root = copy_root(project)
    started = time.perf_counter()
    claim = _Claim.take(project)
    removed = _remove_uncommitted(root, claim.last_seq)
    horizon = log.settled_seq(after=claim.last_seq, timeout=timeout)
    first = last = claim.last_seq
    events = files = batches = own = 0
    paths: list[str] = []

    def tell(phase: Phase, path: str | None = None) -> None:
        if progress is not None:
            progress(Progress(phase, last, horizon, events, files, batches, path))

    tell("start")
    con = duckdb.connect()
    try:
        while last < horizon and (max_batches is None or batches < max_batches):
            rows = log.scan(after=last, through=horizon, limit=batch)
            end = horizon if len(rows) < batch else int(rows[-1][0])
            written = _write_batch(rows, con, root, lambda p: tell("file", p))
            claim.commit(last, end, written, len(rows))
            last = end
            events += len(rows)
            own += sum(1 for row in rows if row[3] == EVENTS_COMPACTED.name)
            files += len(written)
            batches += 1
            paths += [w["path"] for w in written]
            tell("batch")
    finally:
        con.close()
    total_events, total_files = claim.finish()
    tell("done")
    seconds = time.perf_counter() - started
    if events > own or removed:
        log.record(
            EVENTS_COMPACTED,
            subject=LOG,
            actor=actor,
            payload={
                "events": events,
                "files": files,
                "first_seq": first,
                "last_seq": last,
                "removed": removed,
                "seconds": round(seconds, 3),
            },
        )
        log.flush()  # committed when the run returns: the next run finds it, always
    return Compaction(
        events=events,
        files=files,
        batches=batches,
        first_seq=first,
        last_seq=last,
        horizon=horizon,
        removed=removed,
        seconds=seconds,
        total_events=total_events,
        total_files=total_files,
        paths=paths,
    )


def _write_batch(
    rows: list[tuple[Any, ...]],
    con: duckdb.DuckDBPyConnection,
    root: Path,
    wrote: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One file per (kind, hour) of ``rows``, each durably in place; their manifest rows."""
    if not rows:
        return []
    import pyarrow.compute as pc

    from conveyor.monitoring.columnar import (
        HOUR_US,
        file_name,
        partition_folder,
        to_table,
        write_durably,
    )
    from conveyor.monitoring.rollups import write_rollup

    table = to_table(rows, con)
    hours = pc.multiply(pc.divide(table["time_us"], HOUR_US), HOUR_US)  # integer division
    keyed = table.append_column("_hour", hours)
    written = []
    for kind, hour_us in _partitions(keyed):
        mask = pc.and_(pc.equal(keyed["kind"], kind), pc.equal(keyed["_hour"], hour_us))
        part: pa.Table = keyed.filter(mask).drop_columns(["_hour"])
        seqs = part["seq"]
        first_seq, last_seq = pc.min(seqs).as_py(), pc.max(seqs).as_py()
        times = pc.min_max(part["time_us"]).as_py()
        relative = f"{partition_folder(kind, hour_us)}/{file_name(first_seq, last_seq)}"
        size = write_durably(part, root / relative)
        # its per-minute rollup, durably too and before the file is listed: a listed file
        # of a rolled-up kind always has one (see .rollups)
        write_rollup(part, relative, root, con)
        wrote(relative)
        written.append(
            {
                "path": relative,
                "kind": kind,
                "hour_us": hour_us,
                "first_seq": first_seq,
                "last_seq": last_seq,
                "rows": part.num_rows,
                "min_time_us": times["min"],
                "max_time_us": times["max"],
                "bytes": size,
            }
        )
    return written


def _partitions(table: pa.Table) -> list[tuple[str, int]]:
    grouped = table.group_by(["kind", "_hour"], use_threads=False).aggregate([])
    pairs = zip(grouped["kind"].to_pylist(), grouped["_hour"].to_pylist(), strict=True)
    return sorted((str(k), int(h)) for k, h in pairs)


def _remove_uncommitted(root: Path, last_seq: int) -> int:
    """Delete what runs that died left: temporary files, and files holding seqs above the
    checkpoint (written, never committed), and their rollups. Returns how many files
    went."""
    from conveyor.monitoring.columnar import FOLDER, parse_file_name
    from conveyor.monitoring.rollups import remove_uncommitted

    removed = remove_uncommitted(root, last_seq)
    folder = root / FOLDER
    if not folder.is_dir():
        return removed
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
            removed += 1
            continue
        seqs = parse_file_name(path.name)
        if seqs is not None and seqs[0] > last_seq:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


@dataclass
class _Claim:
    """This run's hold on the copy: its token, and the checkpoint when it took it."""

    project: Project
    token: str
    last_seq: int

    @classmethod
    def take(cls, project: Project) -> _Claim:
        from conveyor.monitoring.tables import CompactionRecord as R
        from conveyor.store.types import utcnow

        token = uuid.uuid4().hex
        with project.store.session() as session:
            row = session.get(R, LOG, with_for_update=True)
            if row is None:
                row = R(log=LOG, last_seq=0, events=0, files=0)
                session.add(row)
            row.run_token = token
            row.run_started_at = utcnow()
            row.updated_at = utcnow()
            last_seq = int(row.last_seq or 0)
        return cls(project, token, last_seq)

    def commit(self, before: int, after: int, written: list[dict[str, Any]], events: int) -> None:
        """List ``written`` and move the checkpoint from ``before`` to ``after``, in one
        transaction, if this run still holds the copy."""
        import sqlalchemy as sa

        from conveyor.monitoring.tables import CompactedFileRecord as F
        from conveyor.monitoring.tables import CompactionRecord as R
        from conveyor.store.types import utcnow

        with self.project.store.session() as session:
            done = session.execute(
                sa.update(R)
                .where(R.log == LOG, R.run_token == self.token, R.last_seq == before)
                .values(
                    last_seq=after,
                    events=R.events + events,
                    files=R.files + len(written),
                    updated_at=utcnow(),
                )
            )
            if getattr(done, "rowcount", 1) != 1:
                raise ConcurrentUpdateError(
                    "another compaction of the event log took it over; this one stops (its "
                    "last batch is not committed, and the other run copies it)",
                    log=LOG,
                )
            if written:
                session.execute(sa.insert(F), [{"log": LOG, **w} for w in written])

    def finish(self) -> tuple[int, int]:
        """Give the copy up; its totals (events, files)."""
        from conveyor.monitoring.tables import CompactionRecord as R
        from conveyor.store.types import utcnow

        with self.project.store.session() as session:
            row = session.get(R, LOG, with_for_update=True)
            if row is None:  # pragma: no cover: the claim created it
                return 0, 0
            if row.run_token == self.token:
                row.run_token = None
                row.updated_at = utcnow()
            return int(row.events), int(row.files)
