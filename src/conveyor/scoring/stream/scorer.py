"""``score_stream``: a model version over a broker's stream, at least once, never doubled.

::

    from conveyor.scoring.stream import score_stream

    result = score_stream(
        project, "fraud",                       # the model's route: canary, shadows
        source="nats://127.0.0.1:4222/orders?subject=orders.>&durable=fraud",
        output="scores.fraud",                  # a subject; or sinks=[TableSink(...), ...]
        key_field="user_id",
    )

Each consumer loops: fetch up to ``batch`` messages (its in-flight bound: the next
fetch waits for this batch's acks), decode each (a JSON object of the model's
inputs), pick its version by the route (:mod:`conveyor.scoring.stream.versions`),
check the rows against the version's signature and score those that fit with the
batch scorer's code (:func:`conveyor.scoring.rows.split_rows`,
:func:`conveyor.scoring.rows.score_rows`), update the windows
(:mod:`conveyor.scoring.stream.windows`), write to every sink, publish the dead
letters, save the window checkpoint, and only then ack the batch. A message that is
not JSON, not an object, or whose row the signature refuses is dead-lettered with the
reason and acked (it would fail again). A sink or model failure acks nothing: every
message of the batch is delivered again after a backoff (``backoff`` seconds, doubled
at each delivery up to ``backoff_max``), to this consumer or another, and after
``max_deliver`` deliveries goes to the dead-letter target with the last error.
Consumers started with the same source URL share one group and its messages.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from conveyor.errors import ClosedError, ConveyorError, InvalidInputError
from conveyor.scoring.events import STREAM_STARTED, STREAM_STOPPED

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.project import Project
    from conveyor.registry.signature import Signature
    from conveyor.scoring.stream.sinks import StreamSink
    from conveyor.scoring.stream.source import Message, StreamSource
    from conveyor.scoring.stream.windows import Window, Windows

__all__ = ["StreamResult", "StreamScorer", "StreamStats", "score_stream"]

log = logging.getLogger("conveyor.scoring")


@dataclass
class StreamStats:
    """What a consumer did so far."""

    messages: int = 0
    scored: int = 0
    dead_lettered: int = 0
    retried: int = 0
    late: int = 0
    windows: int = 0
    shadow_compared: int = 0
    shadow_disagreed: int = 0
    by_version: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "scored": self.scored,
            "dead_lettered": self.dead_lettered,
            "retried": self.retried,
            "late": self.late,
            "windows": self.windows,
            "shadow_compared": self.shadow_compared,
            "shadow_disagreed": self.shadow_disagreed,
            "by_version": dict(self.by_version),
        }


@dataclass(frozen=True, slots=True)
class StreamResult:
    """What one consumer did, from start to stop."""

    consumer_id: str
    model: str
    source: str
    group: str
    stats: StreamStats
    seconds: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "consumer_id": self.consumer_id,
            "model": self.model,
            "source": self.source,
            "group": self.group,
            **self.stats.to_dict(),
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


class StreamScorer:
    """One consumer of a group: see the module. ``run()`` loops; ``step()`` does one batch."""

    def __init__(
        self,
        project: Project,
        model: str,
        source: StreamSource | str,
        *,
        output: str | None = None,
        sinks: Sequence[StreamSink] | None = None,
        dead_letter: str | None = None,
        late: str | None = None,
        windows: Sequence[Window] = (),
        window_target: str | None = None,
        batch: int | None = None,
        wait: float | None = None,
        key_field: str | None = None,
        time_field: str | None = None,
        max_deliver: int | None = None,
        backoff: float | None = None,
        backoff_max: float | None = None,
        force: bool = False,
        actor: str | None = None,
    ) -> None:
        from conveyor.scoring.settings import scoring_of
        from conveyor.scoring.stream.sinks import SubjectSink
        from conveyor.scoring.stream.source import open_source
        from conveyor.scoring.stream.versions import Versions

        spec = scoring_of(project.spec).stream
        self.project = project
        self.actor = actor
        self.consumer_id = uuid.uuid4().hex[:12]
        self.batch = _positive(batch if batch is not None else spec.batch, "batch")
        self.wait = wait if wait is not None else spec.wait
        self.key_field = key_field if key_field is not None else spec.key_field
        self.time_field = time_field if time_field is not None else spec.time_field
        self.max_deliver = max_deliver if max_deliver is not None else spec.max_deliver
        self.backoff = backoff if backoff is not None else spec.backoff
        self.backoff_max = backoff_max if backoff_max is not None else spec.backoff_max
        if windows and not (self.key_field and self.time_field):
            raise InvalidInputError(
                "windows are keyed by entity and event time: set key_field and time_field",
                field="key_field" if not self.key_field else "time_field",
            )
        self.versions = Versions(project, model, force=force, route_poll=spec.route_poll)
        self.model = self.versions.model
        self.stats = StreamStats()
        self._owns_source = isinstance(source, str)
        self.source: StreamSource = open_source(source) if isinstance(source, str) else source
        try:
            self.sinks: list[StreamSink] = (
                list(sinks) if sinks is not None else [SubjectSink(output)]
            )
            if output is not None and sinks is not None:
                self.sinks.append(SubjectSink(output))
            self.dead_letter = dead_letter or self.source.default_target("dlq")
            self.windows: Windows | None = None
            if windows:
                from conveyor.scoring.stream.windows import Windows

                self.windows = Windows(
                    windows,
                    name=f"{self.source.group}.{self.model}",
                    target=window_target or self.source.default_target("windows"),
                    late_target=late or self.source.default_target("late"),
                )
            self.source.prepare_target(self.dead_letter)
            for sink in self.sinks:
                sink.open(self.source, project)
        except BaseException:
            self._close_source()
            raise
        self._started = False
        self._closed = False

    # -- running -------------------------------------------------------------------

    def start(self) -> None:
        """Restore the window state and record ``scoring.stream_started``."""
        if self._started:
            return
        self._started = True
        if self.windows is not None:
            self.windows.restore(self.source)
        self.project.events.record(
            STREAM_STARTED,
            subject=f"model:{self.model}",
            actor=self.actor,
            trace_id=self.consumer_id,
            payload={
                **self._identity(),
                "versions": self.versions.versions(),
                "routed": self.versions.routed,
                "output": ", ".join(s.description for s in self.sinks) or None,
                "dead_letter": self.dead_letter,
            },
        )

    def run(
        self,
        *,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
        stop: threading.Event | None = None,
    ) -> StreamResult:
        """Consume until ``stop`` is set, ``max_messages`` were handled, or nothing came
        for ``idle_timeout`` seconds; then close. Broker outages are waited out."""
        started = time.perf_counter()
        error: str | None = None
        last = time.monotonic()
        try:
            self.start()
            while stop is None or not stop.is_set():
                limit = self.batch
                if max_messages is not None:
                    limit = min(limit, max_messages - self.stats.messages)
                    if limit <= 0:
                        break
                try:
                    n = self.step(limit)
                except (ClosedError, InvalidInputError):
                    raise
                except ConveyorError as exc:  # the broker is away: it reconnects
                    log.warning("stream %s: %s", self.source.description, exc.message)
                    time.sleep(min(self.wait, 1.0))
                    n = 0
                if n:
                    last = time.monotonic()
                elif idle_timeout is not None and time.monotonic() - last >= idle_timeout:
                    break
        except BaseException as exc:
            error = (
                exc.message if isinstance(exc, ConveyorError) else f"{type(exc).__name__}: {exc}"
            )
            raise
        finally:
            self.close(error=error, seconds=time.perf_counter() - started)
        return StreamResult(
            self.consumer_id,
            self.model,
            self.source.description,
            self.source.group,
            self.stats,
            time.perf_counter() - started,
            error,
        )

    def step(self, limit: int | None = None) -> int:
        """Fetch, score, write and ack one batch; the number of messages it held."""
        self.start()
        self.versions.refresh()
        messages = self.source.fetch(limit or self.batch, self.wait)
        if messages:
            self._handle(messages)
        return len(messages)

    # -- one batch -----------------------------------------------------------------

    def _handle(self, messages: list[Message]) -> None:
        self.stats.messages += len(messages)
        dead: list[tuple[Message, str]] = []
        records: list[dict[str, Any]] = []
        late: list[dict[str, Any]] = []
        emitted: list[dict[str, Any]] = []
        try:
            records, inputs = self._score(messages, dead)
            if self.windows is not None:
                emitted, late = self.windows.apply(records, inputs)
            for sink in self.sinks:
                sink.write(records)
            if self.windows is not None:
                self.windows.publish(self.source, emitted, late)
            if dead:
                order = {id(m): i for i, m in enumerate(messages)}
                dead.sort(key=lambda d: order[id(d[0])])  # in the order they came
                self._dead_letter(dead)
            if self.windows is not None:
                self.windows.checkpoint(self.source)
        except ClosedError:
            raise
        except Exception as exc:
            if self.windows is not None:
                self.windows.rollback()
            self._failed(messages, exc)
            return
        self.source.ack(messages)
        self.stats.scored += len(records)
        self.stats.dead_lettered += len(dead)
        self.stats.late += len(late)
        self.stats.windows += len(emitted)
        for r in records:
            label = f"{self.model}@{r['version']}"
            self.stats.by_version[label] = self.stats.by_version.get(label, 0) + 1

    def _score(
        self, messages: list[Message], dead: list[tuple[Message, str]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The scored records in the order their messages came, and each one's input."""
        decoded: list[tuple[Message, dict[str, Any], str | None, float | None]] = []
        for m in messages:
            try:
                row = orjson.loads(m.body)
            except orjson.JSONDecodeError as exc:
                dead.append((m, f"not JSON: {exc}"))
                continue
            if not isinstance(row, dict):
                dead.append(
                    (m, f"a message is a JSON object of the model's inputs, got {_kind(row)}")
                )
                continue
            key = None
            if self.key_field:
                value = row.get(self.key_field)
                key = None if value is None else str(value)
                if key is None and self.windows is not None:
                    dead.append((m, f"field {self.key_field!r} (the entity key) is missing"))
                    continue
            when = None
            if self.time_field:
                try:
                    when = event_time(row.get(self.time_field))
                except InvalidInputError as exc:
                    if self.windows is not None:
                        dead.append((m, f"field {self.time_field!r}: {exc.message}"))
                        continue
            decoded.append((m, row, key, when))
        groups: dict[int, list[int]] = {}
        choices = []
        for i, (_, _, key, _) in enumerate(decoded):
            choice = self.versions.choose(key)
            choices.append(choice)
            groups.setdefault(choice.version, []).append(i)
        records: list[dict[str, Any]] = []
        origin: list[int] = []  # each record's position in ``decoded``
        for number, positions in groups.items():
            outputs, refused = self._predict(number, [decoded[i][1] for i in positions])
            for j, reason in refused.items():
                dead.append((decoded[positions[j]][0], reason))
            shadows: dict[int, list[int]] = {}
            for j, answer in outputs.items():
                i = positions[j]
                m, _, key, when = decoded[i]
                choice = choices[i]
                record = {
                    "id": m.id,
                    "model": self.model,
                    "version": number,
                    "arm": choice.arm,
                    "key": key,
                    "time": when,
                    **answer,
                }
                records.append(record)
                origin.append(i)
                for v in choice.shadow:
                    shadows.setdefault(v, []).append(len(records) - 1)
            for shadow, at in shadows.items():
                rows = [decoded[origin[k]][1] for k in at]
                self._shadow(shadow, rows, [records[k] for k in at])
        order = sorted(range(len(records)), key=origin.__getitem__)
        return [records[k] for k in order], [decoded[origin[k]][1] for k in order]

    def _predict(
        self, number: int, rows: list[dict[str, Any]]
    ) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
        """Each row's outputs (by position) and each refused row's reason."""
        from conveyor.scoring.rows import REASON, ROW, score_rows, split_rows

        loaded = self.versions.loaded(number)
        table, missing = rows_table(loaded.signature, rows)
        refused: dict[int, str] = dict(missing)
        keep = [i for i in range(len(rows)) if i not in missing]
        if missing:
            table = table.take(keep)
        model_input, passed, rejected = split_rows(loaded.signature, table)
        bad = rejected.column(ROW).to_pylist() if rejected.num_rows else []
        for position, reason in zip(
            bad, rejected.column(REASON).to_pylist() if bad else [], strict=True
        ):
            refused[keep[position]] = reason
        good = [keep[p] for p in sorted(set(range(len(keep))) - set(bad))]
        if not good:
            return {}, refused
        scored = score_rows(loaded, model_input, passed)
        names = scored.column_names[passed.num_columns :]
        columns = {n: scored.column(n).to_pylist() for n in names}
        outputs = {i: {n: columns[n][k] for n in names} for k, i in enumerate(good)}
        return outputs, refused

    def _shadow(
        self, number: int, rows: list[dict[str, Any]], primary: list[dict[str, Any]]
    ) -> None:
        from conveyor.serving.shadow import compare

        try:
            outputs, _ = self._predict(number, rows)
        except Exception as exc:  # a shadow never fails the message
            log.warning("shadow %s@%s failed: %s", self.model, number, exc)
            return
        for k, record in enumerate(primary):
            answer = outputs.get(k)
            if answer is None:
                continue
            names = [n for n in answer]
            result = compare([record.get(n) for n in names], [answer[n] for n in names])
            self.stats.shadow_compared += 1
            if not result.agree:
                self.stats.shadow_disagreed += 1

    def _dead_letter(self, dead: list[tuple[Message, str]]) -> None:
        from conveyor.scoring.stream.source import Outgoing

        out = []
        for m, reason in dead:
            body = {
                "id": m.id,
                "reason": reason,
                "model": self.model,
                "subject": m.subject,
                "deliveries": m.deliveries,
                "body": m.body.decode("utf-8", "replace"),
            }
            out.append(Outgoing(orjson.dumps(body), m.id))
        self.source.publish(self.dead_letter, out)

    def _failed(self, messages: list[Message], exc: BaseException) -> None:
        why = exc.message if isinstance(exc, ConveyorError) else f"{type(exc).__name__}: {exc}"
        spent = [m for m in messages if m.deliveries >= self.max_deliver]
        again = [m for m in messages if m.deliveries < self.max_deliver]
        log.warning(
            "stream %s: a batch of %d failed (%s); %d delivered again, %d dead-lettered",
            self.source.description,
            len(messages),
            why,
            len(again),
            len(spent),
        )
        try:
            if spent:
                reason = f"failed {spent[0].deliveries} deliveries; last error: {why}"
                self._dead_letter([(m, reason) for m in spent])
                self.source.ack(spent)
                self.stats.dead_lettered += len(spent)
        except ConveyorError as dlq:
            log.warning("dead-lettering failed too (%s): delivered again", dlq.message)
            again = messages
        if again:
            tries = min(m.deliveries for m in again)
            delay = min(self.backoff * 2 ** (tries - 1), self.backoff_max)
            self.source.retry(again, delay)
            self.stats.retried += len(again)

    # -- closing -------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        return {
            "consumer_id": self.consumer_id,
            "model": self.model,
            "source": self.source.description,
            "group": self.source.group,
        }

    def close(self, *, error: str | None = None, seconds: float = 0.0) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._started:
                s = self.stats
                self.project.events.record(
                    STREAM_STOPPED,
                    subject=f"model:{self.model}",
                    actor=self.actor,
                    trace_id=self.consumer_id,
                    payload={
                        **self._identity(),
                        "messages": s.messages,
                        "scored": s.scored,
                        "dead_lettered": s.dead_lettered,
                        "retried": s.retried,
                        "late": s.late,
                        "windows": s.windows,
                        "seconds": round(seconds, 3),
                        "error": error,
                    },
                )
        finally:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as exc:
                    log.warning("closing %s: %s", sink.description, exc)
            self._close_source()

    def _close_source(self) -> None:
        if self._owns_source:
            self.source.close()

    def __enter__(self) -> StreamScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rows_table(
    signature: Signature | None, rows: list[dict[str, Any]]
) -> tuple[pa.Table, dict[int, str]]:
    """The rows as an Arrow table of the signature's columns, and the rows that lack one
    (position -> reason). A column whose values Arrow cannot take as one type (a
    number here, text there) comes as text: ``split_rows`` converts what it can and
    refuses the rest with the reason."""
    import pyarrow as pa

    if signature is None:
        return pa.Table.from_pylist(rows), {}
    names = signature.names
    missing: dict[int, str] = {}
    for i, row in enumerate(rows):
        absent = [n for n in names if n not in row]
        if absent:
            missing[i] = (
                f"input column {absent[0]!r} is missing; the model expects {', '.join(names)}"
            )
    columns = []
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            columns.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            columns.append(
                pa.array(
                    [
                        None if v is None else v if isinstance(v, str) else orjson.dumps(v).decode()
                        for v in values
                    ],
                    pa.string(),
                )
            )
    return pa.table(columns, names=list(names)), missing


def event_time(value: Any) -> float:
    """Epoch seconds from a number (seconds; milliseconds above 1e11) or ISO 8601 text."""
    if isinstance(value, bool) or value is None:
        raise InvalidInputError(f"the event time is {value!r}, not a time", field="time")
    if isinstance(value, int | float):
        seconds = float(value)
        return seconds / 1000.0 if seconds > 1e11 else seconds
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInputError(
                f"the event time {value[:40]!r} is not ISO 8601", field="time"
            ) from None
        if parsed.tzinfo is None:
            from datetime import UTC

            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise InvalidInputError(f"the event time is a {_kind(value)}, not a time", field="time")


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _positive(value: int, name: str) -> int:
    if not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}", field=name)
    return value


def score_stream(
    project: Project,
    model: str,
    *,
    source: str | StreamSource,
    max_messages: int | None = None,
    idle_timeout: float | None = None,
    stop: threading.Event | None = None,
    **options: Any,
) -> StreamResult:
    """Score ``source``'s messages with ``model`` until stopped (see :class:`StreamScorer`
    for ``options``: output, sinks, dead_letter, late, windows, batch, key_field...)."""
    scorer = StreamScorer(project, model, source, **options)
    return scorer.run(max_messages=max_messages, idle_timeout=idle_timeout, stop=stop)
