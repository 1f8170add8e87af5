"""The event log moved off a broker: JetStream -> PostgreSQL -> Parquet, then acked.

Servers write their events to NATS JetStream (``CONVEYOR_EVENTS=nats://...``: batched,
acknowledged publishes, tens of thousands a second per node). The sink is the one
process that moves them to where monitoring reads them: this project's SQL event log
(``backends.events``, PostgreSQL) and its columnar Parquet copy
(:mod:`.compaction`)::

    conveyor events sink --source nats://127.0.0.1:4222/CONVEYOR_EVENTS   # runs until SIGTERM
    conveyor events sink --status                                          # where it stands

One cycle:

1. pull what the durable consumer (:meth:`NatsEventLog.durable`) has, decoded and
   checked as ``emit`` checks an event; a message that is not an event is kept as a
   ``monitoring.sink_rejected`` event with the reason (the stream keeps the message too);
2. insert the events into the SQL log, ignoring ids already there, and commit: a batch
   delivered again (the sink was killed before its ack, or an ack was lost) adds
   nothing;
3. once ``batch_events`` are held or the oldest has waited ``interval_s``: compact
   (:func:`~conveyor.monitoring.compaction.compact`: the new rows into Parquet files
   named by their seq range, listed with the checkpoint in one transaction; files of a
   run that died are removed by the next), so every held event is in both stores;
4. ack every held message. Only now: an event is acked once it is durable in
   PostgreSQL *and* in the Parquet copy.

What a crash leaves: killed in 1 or 2, the messages are not acked and come again after
``ack_wait_s``; in 3, the rows are in PostgreSQL (not again: ids are unique) and files
may be on disk unlisted (removed, rewritten); in 4, some acks are lost: those events
come again and are skipped. A restart of NATS costs the pulls and acks in flight, which
the consumer (on disk) gives again. So every event the broker acknowledged to a writer
ends in PostgreSQL once and in the Parquet copy once (``tests/events_sink``).

SIGTERM (or Ctrl-C) stops it gracefully: it finishes the held batch (steps 3 and 4)
and exits. ``--status`` and the ``conveyor_events_sink_*`` metrics (``--metrics-port``)
show the consumer's acked sequence, what is pending, and the copy's checkpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConcurrentUpdateError, ConveyorError, InvalidInputError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from conveyor.events.durable import Delivery, DurableReader
    from conveyor.events.nats import NatsEventLog
    from conveyor.events.sql import SqlEventLog
    from conveyor.monitoring.sink_settings import SinkSpec
    from conveyor.project import Project

__all__ = ["Sink", "SinkStats", "sink_status"]

log = logging.getLogger("conveyor.monitoring.sink")

#: Messages asked for per pull (the server hands out fewer when fewer wait).
_PULL = 5_000
#: Longest a pull waits for the first message (also how soon SIGTERM is noticed).
_PULL_WAIT_S = 0.25
_BACKOFF_MIN_S = 0.1
_BACKOFF_MAX_S = 5.0


@dataclass
class SinkStats:
    """What a sink did since it started."""

    delivered: int = 0  # messages pulled (a redelivered one counts again)
    inserted: int = 0  # events new to the SQL log
    skipped: int = 0  # events the SQL log held already (delivered again)
    rejected: int = 0  # messages that are not events
    acked: int = 0
    batches: int = 0
    compacted_files: int = 0
    acked_seq: int = 0  # the highest stream sequence this sink acked
    failures: int = 0
    seconds: float = 0.0
    last_error: str | None = None
    stopped: str | None = None  # why run() returned
    timings: dict[str, float] = field(
        default_factory=lambda: {"pull": 0.0, "sql": 0.0, "parquet": 0.0, "ack": 0.0}
    )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["events_per_s"] = round(self.inserted / self.seconds, 1) if self.seconds else None
        data["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        return data


class Sink:
    """Moves the broker's events into the project's SQL log and Parquet copy (see module).

    ``Sink.open(project)`` reads ``monitoring.sink`` (``source`` and the rest can be
    given as keywords instead); :meth:`run` loops until ``stop`` is set; close it, or use
    it with ``with``.
    """

    def __init__(
        self,
        project: Project,
        source: NatsEventLog,
        spec: SinkSpec,
        *,
        actor: str | None = None,
        metrics: SinkMetrics | None = None,
    ) -> None:
        from conveyor.monitoring.compaction import copy_root, sql_log

        self.project = project
        self.source = source
        self.spec = spec
        self.actor = actor
        self.metrics = metrics
        self.target: SqlEventLog = sql_log(project)
        copy_root(project)  # a local artifact store, or the error now rather than later
        if str(self.target.url) == str(source.url):  # pragma: no cover: schemes differ
            raise InvalidInputError("the sink's source and target are the same log", field="source")
        self.reader: DurableReader = source.durable(
            spec.durable, ack_wait=spec.ack_wait_s, max_ack_pending=max(2 * spec.batch_events, 1000)
        )
        self._engine = _engine_of(self.target)
        self.stats = SinkStats()

    @classmethod
    def open(
        cls,
        project: Project,
        *,
        source: str | None = None,
        actor: str | None = None,
        metrics_port: int | None = None,
        **overrides: Any,
    ) -> Sink:
        """A sink for ``project`` reading ``source`` (default ``monitoring.sink.source``);
        ``overrides`` replace fields of ``monitoring.sink`` (``batch_events=5000``...).

        InvalidInputError when there is no source, the source is not ``nats://``, or the
        project's own event log is not SQL; BackendUnavailableError naming the URL when
        NATS does not answer."""
        from conveyor.backends import EVENTS
        from conveyor.events.nats import NatsEventLog
        from conveyor.monitoring.settings import monitoring_of

        spec = monitoring_of(project.spec).sink
        if overrides:
            import pydantic

            try:
                spec = type(spec).model_validate({**spec.model_dump(), **overrides})
            except pydantic.ValidationError as exc:
                first = exc.errors()[0]
                name = ".".join(str(x) for x in first["loc"]) or "sink"
                raise InvalidInputError(
                    f"monitoring.sink.{name}: {first['msg']} (got {first.get('input')!r})",
                    field=name,
                ) from None
        url = source or spec.source
        if not url:
            raise InvalidInputError(
                "the sink needs the broker's event log to read: --source nats://HOST:4222/STREAM "
                "or monitoring.sink.source in conveyor.yaml",
                field="source",
            )
        opened = EVENTS.open(url)
        if not isinstance(opened, NatsEventLog):
            opened.close()
            raise InvalidInputError(
                f"the sink reads an event log on NATS JetStream (nats://...), not {opened.url}",
                field="source",
            )
        try:
            metrics = SinkMetrics(metrics_port) if metrics_port is not None else None
            return cls(project, opened, spec, actor=actor, metrics=metrics)
        except BaseException:
            opened.close()
            raise

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.reader.close()
        self._engine.dispose()
        self.source.close()
        if self.metrics is not None:
            self.metrics.close()

    # -- the loop -------------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        idle_exit_s: float | None = None,
        on_cycle: Callable[[SinkStats], None] | None = None,
    ) -> SinkStats:
        """Move events until ``stop`` is set (then finish the held batch), or until nothing
        came for ``idle_exit_s`` seconds with nothing held. Errors of either side are logged
        and retried with backoff; they never end the loop."""
        stop = stop or threading.Event()
        spec = self.spec
        held: list[Delivery] = []
        held_since = 0.0
        last_seen = time.monotonic()
        started = time.perf_counter()
        try:
            while True:
                stopping = stop.is_set()
                got: list[Delivery] = []
                if not stopping and len(held) < spec.batch_events:
                    size = min(_PULL, spec.batch_events - len(held))
                    wait = min(_PULL_WAIT_S, spec.interval_s)
                    # Ask for the next ones before storing these: they arrive meanwhile.
                    ahead = min(_PULL, spec.batch_events)
                    fetch = partial(self.reader.fetch, size, wait, prefetch=ahead)
                    got = self._attempt("pull", fetch, stop)
                    if got:
                        self.stats.delivered += len(got)
                        if self._attempt("sql", partial(self._store, got), stop) is not None:
                            if not held:
                                held_since = time.monotonic()
                            held += got
                            last_seen = time.monotonic()
                        # else stopped before it was stored: not acked, it comes again
                now = time.monotonic()
                due = bool(held) and (
                    stopping
                    or len(held) >= spec.batch_events
                    or now - held_since >= spec.interval_s
                )
                if due:
                    self._settle(held, stop)
                    held = []
                    self.stats.seconds = time.perf_counter() - started
                    if on_cycle is not None:
                        on_cycle(self.stats)
                if self.metrics is not None:
                    self.metrics.update(self)
                if stopping:
                    self.stats.stopped = "stop"
                    break
                if idle_exit_s is not None and not held and now - last_seen >= idle_exit_s:
                    self.stats.stopped = "idle"
                    break
        finally:
            self.stats.seconds = time.perf_counter() - started
        return self.stats

    def _attempt(self, step: str, work: Callable[[], Any], stop: threading.Event) -> Any:
        """``work()``, retried with backoff while it fails; None once ``stop`` is set
        (``pull`` gives up at once then, ``sql`` after one more try)."""
        delay = _BACKOFF_MIN_S
        while True:
            begin = time.perf_counter()
            try:
                result = work()
            except (ConveyorError, OSError, TimeoutError) as exc:
                self.stats.failures += 1
                self.stats.last_error = f"{step}: {exc}"
                log.warning("events sink, %s failed (retrying in %.1f s): %s", step, delay, exc)
                if stop.wait(delay):
                    return [] if step == "pull" else None
                delay = min(delay * 2, _BACKOFF_MAX_S)
                continue
            finally:
                self.stats.timings[step] = self.stats.timings.get(step, 0.0) + (
                    time.perf_counter() - begin
                )
            return result

    def _store(self, got: list[Delivery]) -> int:
        """Insert the events of ``got`` (ids already there are skipped) and keep the others
        as rejected events; committed when it returns. Returns the SQL log's highest seq."""
        import sqlalchemy as sa

        from conveyor.events.table import events, insert_statement
        from conveyor.store.engine import translate_errors

        rows = [d.row for d in got if d.row is not None]
        bad = [d for d in got if d.row is None]
        new = 0
        with translate_errors(self.target.url, "events"), self._engine.begin() as conn:
            if rows and conn.dialect.name == "postgresql":
                new = _copy_in(conn, rows)
            elif rows:
                insert = insert_statement(conn.dialect.name).returning(events.c.seq)
                new = len(conn.execute(insert, rows).all())
            high = conn.execute(sa.select(sa.func.max(events.c.seq))).scalar() or 0
        if bad:
            self._reject(bad)
        self.stats.inserted += new
        self.stats.skipped += len(rows) - new
        return int(high)

    def _reject(self, bad: list[Delivery]) -> None:
        from conveyor.monitoring.events import SINK_REJECTED

        for d in bad:
            log.error("events sink: stream message %d is not an event: %s", d.seq, d.error)
            self.target.record(
                SINK_REJECTED,
                subject=self.reader.stream,
                actor=self.actor,
                payload={
                    "stream": self.reader.stream,
                    "seq": d.seq,
                    "reason": d.error or "",
                    "bytes": d.size,
                    "delivered": d.delivered,
                },
            )
        self.target.flush()  # committed before the message is acked
        self.stats.rejected += len(bad)

    def _settle(self, held: list[Delivery], stop: threading.Event) -> None:
        """Compact until the copy's checkpoint covers every held event, then ack them."""
        from conveyor.monitoring.compaction import compact

        target = self._attempt("sql", self._highest_seq, stop)
        if target is None:
            return  # stopped while the database was away: not acked, they come again
        while True:
            begin = time.perf_counter()
            try:
                done = compact(self.project, actor=self.actor)
                self.stats.compacted_files += done.files
                if done.last_seq >= target:
                    break
            except ConcurrentUpdateError:
                pass  # a compaction elsewhere took the copy over; it copies these too
            except (ConveyorError, OSError) as exc:
                self.stats.failures += 1
                self.stats.last_error = f"parquet: {exc}"
                log.warning("events sink, compaction failed (retrying): %s", exc)
            finally:
                self.stats.timings["parquet"] += time.perf_counter() - begin
            if self._checkpoint() >= target:
                break
            if stop.wait(_BACKOFF_MIN_S) and self._checkpoint() < target:
                return  # stopped before the copy caught up: not acked, they come again
        begin = time.perf_counter()
        try:
            self.reader.ack(held)
        except ConveyorError as exc:
            # Stored in both places: an unacked message only comes again and is skipped.
            self.stats.failures += 1
            self.stats.last_error = f"ack: {exc}"
            log.warning("events sink: %d acks were not sent (%s); they come again", len(held), exc)
        else:
            self.stats.acked += len(held)
            self.stats.acked_seq = max(self.stats.acked_seq, max(d.seq for d in held))
        finally:
            self.stats.timings["ack"] += time.perf_counter() - begin
        self.stats.batches += 1

    def _highest_seq(self) -> int:
        import sqlalchemy as sa

        from conveyor.events.table import events
        from conveyor.store.engine import translate_errors

        with translate_errors(self.target.url, "events"), self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(events.c.seq))).scalar() or 0)

    def _checkpoint(self) -> int:
        return int(sink_checkpoint(self.project)["last_seq"])

    def status(self) -> dict[str, Any]:
        """Where the sink stands: the consumer's position and lag, the SQL log's highest
        seq, the Parquet copy's checkpoint, and the rejected messages kept."""
        return sink_status(self.project, self.reader, self.target)


def sink_checkpoint(project: Project) -> dict[str, Any]:
    """The Parquet copy's checkpoint: ``last_seq``, ``events`` and ``files`` so far."""
    from conveyor.monitoring.compaction import LOG
    from conveyor.monitoring.tables import CompactionRecord

    with project.store.session() as session:
        row = session.get(CompactionRecord, LOG)
        if row is None:
            return {"last_seq": 0, "events": 0, "files": 0}
        return {
            "last_seq": int(row.last_seq or 0),
            "events": int(row.events or 0),
            "files": int(row.files or 0),
        }


def sink_status(project: Project, reader: DurableReader, target: SqlEventLog) -> dict[str, Any]:
    """``conveyor events sink --status``: see :meth:`Sink.status`."""
    from conveyor.monitoring.events import SINK_REJECTED

    consumer = reader.info()
    return {
        "source": str(reader.url),
        "stream": reader.stream,
        **consumer,
        "target": str(target.url),
        "sql_settled_seq": target.settled_seq(timeout=1.0),
        "parquet": sink_checkpoint(project),
        "rejected": target.count(kind=SINK_REJECTED.name),
    }


#: The staging table of a PostgreSQL batch: the event's columns, text as it came.
_STAGE = "conveyor_sink_stage"
_COLUMNS = (
    "id",
    "time_us",
    "kind",
    "subject",
    "subject_version",
    "request_id",
    "trace_id",
    "actor",
    "payload",
)


def _copy_in(conn: Any, rows: list[dict[str, Any]]) -> int:
    """PostgreSQL: ``rows`` into ``events`` in the transaction of ``conn``, ids already
    there skipped, in the order given; how many were new.

    COPY into a temporary table, then one INSERT ... SELECT ... ON CONFLICT DO NOTHING:
    a fifth of the time of a multi-row INSERT built in Python (measured)."""
    columns = ", ".join(_COLUMNS)
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (n bigint, id text, time_us bigint, "
            "kind text, subject text, subject_version text, request_id text, trace_id text, "
            "actor text, payload text) ON COMMIT DELETE ROWS"
        )
        with cur.copy(f"COPY {_STAGE} (n, {columns}) FROM STDIN") as copy:
            for n, row in enumerate(rows):
                copy.write_row((n, *(row[c] for c in _COLUMNS)))
        cur.execute(
            f"INSERT INTO events ({columns}) SELECT {columns[: -len('payload')]}payload::jsonb "
            f"FROM {_STAGE} ORDER BY n ON CONFLICT (id) DO NOTHING"
        )
        new = int(cur.rowcount)
        cur.execute(f"TRUNCATE {_STAGE}")
    return new


def _engine_of(target: SqlEventLog) -> Engine:
    """An engine of the sink's own on the project's SQL log (its batches, not the log's
    background writer: a batch must be committed before it is acked)."""
    import orjson

    from conveyor.store.engine import create_engine

    options: dict[str, Any] = {}
    if target.url.scheme == "postgresql":
        options["json_deserializer"] = orjson.loads
    return create_engine(target.url, "events", **options)


class SinkMetrics:
    """The sink's Prometheus metrics on ``/metrics`` of ``port`` (0: any free port)."""

    def __init__(self, port: int) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.lag = Gauge(
            "conveyor_events_sink_lag",
            "Messages of the stream not yet acked by the sink (pending + in flight).",
            registry=self.registry,
        )
        self.acked_seq = Gauge(
            "conveyor_events_sink_acked_seq",
            "Highest stream sequence the sink acked (every event up to it is stored).",
            registry=self.registry,
        )
        self.events = Counter(
            "conveyor_events_sink_events",
            "Events the sink moved, by outcome (inserted, skipped as already stored, rejected).",
            ["outcome"],
            registry=self.registry,
        )
        self._seen = {"inserted": 0, "skipped": 0, "rejected": 0}
        self._next_info = 0.0
        self.server, self.thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        self.port = int(self.server.server_address[1])

    def update(self, sink: Sink) -> None:
        stats = sink.stats
        for outcome in self._seen:
            now = int(getattr(stats, outcome))
            if now > self._seen[outcome]:
                self.events.labels(outcome).inc(now - self._seen[outcome])
                self._seen[outcome] = now
        self.acked_seq.set(stats.acked_seq)
        if time.monotonic() >= self._next_info:  # one server round trip a second at most
            self._next_info = time.monotonic() + 1.0
            try:
                self.lag.set(sink.reader.info()["lag"])
            except ConveyorError as exc:
                log.debug("events sink: no consumer info for the lag metric: %s", exc)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
