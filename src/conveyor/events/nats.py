"""The event log on NATS JetStream: ``nats://host:4222/<stream>?subject_prefix=...``.

Each event is a message on the subject ``<prefix>.<kind>`` of one stream
(file storage, no limits: nothing is dropped), created when missing. The
stream sequence is the log's order. Options: ``subject_prefix`` (default: the
stream name; the stream is default ``CONVEYOR_EVENTS``), ``duplicate_window``
(seconds, default 120), ``replicas`` (default 1), ``connect_timeout`` and
``timeout`` (seconds, default 2 and 5).

Writing
    The batch writer publishes a batch at once and waits for every ack, so
    ``durable=True`` returns once JetStream has stored the event. The event id
    is the ``Nats-Msg-Id``: JetStream drops a message whose id it saw within
    the stream's duplicate window, so a batch retried after an ambiguous
    failure stores nothing twice. Beyond that window (two minutes unless the
    URL says otherwise) an event appended again is stored again. An event
    larger than the server's ``max_payload`` (1 MB by default) is refused and
    kept in ``rejected``. A batch retried after a partial failure keeps each
    stored event where it is, so the retried ones land after later ones.

Reading
    Reads go through ephemeral pull consumers (memory storage, no acks) that
    filter on the kind's subject (``prefix.run.>`` for ``run.*``); the other
    filters are applied in the client (``streams.Matcher``). JetStream reads
    forwards only, so a descending page reads windows of sequence numbers
    backwards, each forwards. ``follow`` keeps one consumer and long-polls it,
    recreating it from the last sequence seen if the server dropped it.

The connection, its event loop thread, the consumers and the publish acks are
in ``jetstream.py``; this module is the log and its stream.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Self

import nats.js.errors
from nats.js import api

from conveyor.backends import BackendURL, int_option, seconds_option
from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.events.jetstream import Gone, Link, Pull, delete, errors, position, refused, translate
from conveyor.events.log import open_writer
from conveyor.events.schema import Event
from conveyor.events.streams import (
    CHUNK,
    Entries,
    StreamEventLog,
    check_query,
    decode_event,
)
from conveyor.events.writer import BatchWriter

if TYPE_CHECKING:
    from conveyor.events.durable import DurableReader

__all__ = ["NatsEventLog"]

_DEFAULT_PORT = 4222
_DEFAULT_STREAM = "CONVEYOR_EVENTS"
_OPTIONS = ("subject_prefix", "duplicate_window", "replicas", "connect_timeout", "timeout")
_STREAM = re.compile(r"[A-Za-z0-9_-]{1,200}")
_PREFIX = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
#: Widest window of sequence numbers a descending read asks for at once.
_MAX_WINDOW = 65_536
#: How far an event's own time may be ahead of the server's clock when looking for it.
_CLOCK_SKEW = timedelta(minutes=5)
_NAME_IN_USE = 10058  # JSStreamNameExistErr
_OVERLAP = 10065  # JSStreamSubjectOverlapErr


@dataclass(frozen=True, slots=True)
class _Config:
    stream: str
    prefix: str
    duplicate_window: float
    replicas: int
    connect_timeout: float
    timeout: float

    @classmethod
    def parse(cls, url: BackendURL) -> _Config:
        check_query(url, _OPTIONS)
        stream = url.path.strip("/") or _DEFAULT_STREAM
        if _STREAM.fullmatch(stream) is None:
            raise InvalidInputError(
                f"{url}: the path names the JetStream stream (letters, digits, '_' and '-'), "
                f"got {stream!r}",
                field="url",
            )
        prefix = url.query.get("subject_prefix", stream)
        if _PREFIX.fullmatch(prefix) is None:
            raise InvalidInputError(
                f"{url}: subject_prefix must be dot-separated tokens of letters, digits, '_' "
                f"and '-' (no wildcards), got {prefix!r}",
                field="subject_prefix",
            )
        return cls(
            stream,
            prefix,
            seconds_option(url, "duplicate_window", 120.0),
            int_option(url, "replicas", 1),
            seconds_option(url, "connect_timeout", 2.0),
            seconds_option(url, "timeout", 5.0),
        )

    def subject(self, kind: str | None) -> str:
        """The subject filter for a kind filter: exact, ``x.*`` -> ``x.>``, None -> all."""
        if kind is None:
            return f"{self.prefix}.>"
        if kind.endswith(".*"):
            return f"{self.prefix}.{kind[:-2]}.>"
        return f"{self.prefix}.{kind}"


class NatsEventLog(StreamEventLog):
    """The event log on a NATS JetStream stream. Open it with :meth:`from_url`."""

    def __init__(self, url: BackendURL, writer: BatchWriter, link: Link, config: _Config) -> None:
        super().__init__(url, writer, link)
        self._nats = link
        self._config = config

    @classmethod
    def from_url(
        cls,
        url: BackendURL | str,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.05,
        max_buffer: int = 100_000,
        migrate: bool = True,
        spill_dir: str | os.PathLike[str] | None = None,
    ) -> Self:
        """Connect, and create the stream if it is missing (unless ``migrate=False``).

        The writer options are :meth:`EventLog.from_url`'s. Raises
        BackendUnavailableError naming host and port if NATS does not answer,
        InvalidInputError for a bad URL option or a stream that exists with
        other subjects.
        """
        parsed = BackendURL.parse(url)
        config = _Config.parse(parsed)
        parsed = parsed.with_(host=parsed.host or "127.0.0.1", port=parsed.port or _DEFAULT_PORT)
        link = Link(parsed, config.connect_timeout, config.timeout)

        writer = open_writer(
            parsed,
            lambda rows: link.publish(config.prefix, rows),
            refused=refused,
            translate=lambda exc: translate(parsed, exc),
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_buffer=max_buffer,
            spill_dir=spill_dir,
        )
        try:
            with errors(parsed):
                link.run(_ensure_stream, parsed, config, migrate)
        except BaseException:
            link.close()
            raise
        return cls(parsed, writer, link, config)

    # -- primitives ---------------------------------------------------------------------

    def _errors(self) -> AbstractContextManager[None]:
        return errors(self.url)

    def _info(self, subjects_filter: str | None = None) -> Any:
        async def info(nc: Any) -> Any:
            js = nc.jetstream(timeout=self._config.timeout)
            return await js.stream_info(self._config.stream, subjects_filter=subjects_filter)

        return self._nats.run(info)

    def _entries(
        self, kind: str | None, after: int | None, descending: bool, first: int
    ) -> Entries:
        subject = self._config.subject(kind)
        if not descending:
            for msg in self._messages(subject, (after or 0) + 1, None, None, first):
                yield position(msg.reply)[0], decode_event(msg.data)
            return
        state = self._info().state
        low = max(state.first_seq, 1)
        high = state.last_seq if after is None else min(after - 1, state.last_seq)
        width = max(first, 16)
        while high >= low:
            start = max(low, high - width + 1)
            window = [
                (position(msg.reply)[0], decode_event(msg.data))
                for msg in self._messages(subject, start, None, high, min(CHUNK, high - start + 1))
            ]
            yield from reversed(window)
            high = start - 1
            width = min(width * 4, _MAX_WINDOW)

    def _messages(
        self,
        subject: str,
        start_seq: int | None,
        start_time: datetime | None,
        stop: int | None,
        first: int,
    ) -> Iterator[Any]:
        """Raw messages on ``subject`` from a sequence or a time, up to sequence ``stop``."""
        timeout = self._config.timeout
        pull = self._nats.run(
            Pull.open, self._config.stream, subject, start_seq, start_time, timeout
        )
        try:
            size = max(1, min(first, CHUNK))
            while True:
                msgs = self._nats.run(pull.fetch, size, None, timeout)
                for msg in msgs:
                    if stop is not None and position(msg.reply)[0] > stop:
                        return
                    yield msg
                if len(msgs) < size or position(msgs[-1].reply)[1] == 0:
                    return
                size = CHUNK
        finally:
            self._nats.spawn(pull.close)

    def _count_kind(self, kind: str | None) -> int | None:
        if kind is None:
            return int(self._info().state.messages)
        subjects = self._info(self._config.subject(kind)).state.subjects or {}
        return int(sum(subjects.values()))

    def _last_position(self) -> int:
        return int(self._info().state.last_seq)

    def _position_of(self, event: Event) -> int | None:
        # No index by message id: scan the kind's subject from a little before the
        # event's time (stored messages carry the server's clock), then everything.
        subject = f"{self._config.prefix}.{event.kind}"
        for since in (event.time - _CLOCK_SKEW, None):
            for msg in self._messages(subject, None, since, None, CHUNK):
                if msg.headers and msg.headers.get("Nats-Msg-Id") == event.id:
                    return position(msg.reply)[0]
        return None

    def _feed(self, kind: str | None, after: int) -> _Feed:
        return _Feed(self._nats, self._config, self._config.subject(kind), after)

    def _delete(self, doomed: list[tuple[int, str]]) -> None:
        seqs = [seq for seq, _ in doomed]
        self._nats.run(
            delete,
            self._config.stream,
            seqs,
            self._config.timeout,
            timeout=self._config.timeout * 4,
        )

    def _facts(self) -> dict[str, Any]:
        state = self._info().state
        return {
            "stream": self._config.stream,
            "subject_prefix": self._config.prefix,
            "messages": state.messages,
            "first_seq": state.first_seq,
            "last_seq": state.last_seq,
        }

    def durable(
        self, name: str, *, ack_wait: float = 60.0, max_ack_pending: int = 100_000
    ) -> DurableReader:
        """A durable pull consumer ``name`` on every kind of this log, with explicit acks:
        what a process that copies the log elsewhere reads (see ``durable.py``). The
        consumer is made on the first fetch if missing, and kept on the server."""
        from conveyor.events.durable import DurableReader

        self._check_open()
        return DurableReader(
            self._nats,
            self.url,
            self._config.stream,
            self._config.subject(None),
            name,
            ack_wait=ack_wait,
            max_ack_pending=max_ack_pending,
            timeout=self._config.timeout,
        )

    def ping(self) -> None:
        """Ask for the stream's state; BackendUnavailableError if NATS does not answer."""
        self._check_open()
        with self._errors():
            self._info()


class _Feed:
    """``follow``'s one consumer, long-polled; recreated from the next sequence if lost."""

    def __init__(self, link: Link, config: _Config, subject: str, after: int) -> None:
        self._link = link
        self._config = config
        self._subject = subject
        self._next = after + 1
        self._pull: Pull | None = None

    def next(self, wait: float) -> list[tuple[int, Event]]:
        timeout = self._config.timeout
        for _ in range(2):
            if self._pull is None:
                self._pull = self._link.run(
                    Pull.open, self._config.stream, self._subject, self._next, None, timeout
                )
            try:
                msgs = self._link.run(self._pull.fetch, CHUNK, None, timeout)
                if not msgs:
                    msgs = self._link.run(
                        self._pull.fetch, 1, wait, timeout, timeout=wait + timeout
                    )
            except Gone:
                self._pull = None
                continue
            found = []
            for msg in msgs:
                seq = position(msg.reply)[0]
                found.append((seq, decode_event(msg.data)))
                self._next = seq + 1
            return found
        return []

    def close(self) -> None:
        if self._pull is not None:
            self._link.spawn(self._pull.close)
            self._pull = None


# -- the stream ------------------------------------------------------------------------------


async def _ensure_stream(nc: Any, url: BackendURL, config: _Config, create: bool) -> None:
    js = nc.jetstream(timeout=config.timeout)
    subjects = f"{config.prefix}.>"
    try:
        info = await js.stream_info(config.stream)
    except nats.js.errors.NotFoundError:
        if not create:
            raise NotFoundError(
                f"{url}: the stream {config.stream} does not exist; open the log with "
                "migrate=True (the default) to create it",
                field="url",
            ) from None
        try:
            info = await js.add_stream(
                name=config.stream,
                subjects=[subjects],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                duplicate_window=config.duplicate_window,
                num_replicas=config.replicas,
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code not in (_OVERLAP, _NAME_IN_USE):
                raise
            # Another process may have created this very stream meanwhile (the server then
            # answers either code): it is ours if it now exists under our name; the
            # subjects are checked below.
            try:
                info = await js.stream_info(config.stream)
            except nats.js.errors.NotFoundError:
                if exc.err_code == _NAME_IN_USE:
                    raise exc from None
                raise InvalidInputError(
                    f"{url}: another stream already takes subjects {subjects}; choose another "
                    "subject_prefix",
                    field="subject_prefix",
                ) from exc
    if subjects not in (info.config.subjects or []):
        raise InvalidInputError(
            f"{url}: the stream {config.stream} exists with subjects {info.config.subjects}, "
            f"not {subjects}; set subject_prefix to match it or name another stream",
            field="subject_prefix",
        )
    if info.config.retention not in (None, api.RetentionPolicy.LIMITS):
        raise InvalidInputError(
            f"{url}: the stream {config.stream} has {info.config.retention} retention, which "
            "deletes messages once consumed; the event log needs 'limits' retention",
            field="url",
        )
