"""The event log on Redis Streams: ``redis://host:6379/<db>?stream=conveyor:events``.

Each event is one entry of the stream (a field ``event`` holding its JSON,
see ``streams.py``). Options: ``stream`` (the key, default
``conveyor:events``), ``socket_timeout`` and ``connect_timeout`` (seconds).

Order
    Entries get the ids ``0-1``, ``0-2``, ... (``XADD key 0-*``: Redis
    numbers them within "millisecond 0"), so the position of an event is one
    integer that only grows, as ``seq`` in SQL, and page cursors are the same
    on every backend. A stream whose entries were added by another program
    with time-based ids cannot take these; the stream belongs to the log.

Writing
    One Lua script appends a whole batch atomically, skipping every event
    whose id is already in the companion hash ``<stream>:ids`` (event id ->
    entry id): a batch retried after an ambiguous failure stores nothing
    twice, whenever it is retried. The hash also finds an event's entry for
    ``follow(after=...)``. No ``MAXLEN``: nothing is ever trimmed.

Reading
    ``XRANGE``/``XREVRANGE`` in chunks, filtered in the client; ``follow``
    blocks in ``XREAD``. ``erase`` scans and ``XDEL``s (Redis frees an
    entry's memory once its whole node is deleted, and an AOF file keeps it
    until rewritten: run ``BGREWRITEAOF`` after an erasure when AOF is on).

redis-py's pool is fork safe (a child makes its own connections), so a forked
child needs only a fresh writer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Self, cast

import redis

from conveyor.backends import BackendURL, unavailable
from conveyor.errors import BackendError, ConveyorError, InvalidInputError
from conveyor.events.log import open_writer
from conveyor.events.schema import Event
from conveyor.events.streams import (
    CHUNK,
    Entries,
    StreamEventLog,
    decode_event,
    encode_event,
)
from conveyor.events.writer import BatchWriter, Row
from conveyor.redis_pool import connection_pool

__all__ = ["RedisStreamEventLog"]

_SEAM = "events"
_DEFAULT_STREAM = "conveyor:events"
_FIELD = b"event"

#: Entries as redis-py returns them (responses are not decoded).
_Rows = list[tuple[bytes, dict[bytes, bytes]]]

# KEYS: the stream, the id hash. ARGV: event id, event JSON, event id, event JSON, ...
# An id already in the hash is skipped; otherwise the entry is added and its id noted.
_APPEND = """
local added = 0
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    local entry = redis.call('XADD', KEYS[1], '0-*', 'event', ARGV[i + 1])
    redis.call('HSET', KEYS[2], ARGV[i], entry)
    added = added + 1
  end
end
return added
"""


class _Pool:
    """The log's connection pool."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.pool = pool

    def close(self) -> None:
        self.pool.disconnect()

    def reset_after_fork(self) -> None:
        """Nothing to do: the pool sees the new pid and opens new connections."""

    def in_own_thread(self) -> bool:
        return False


class RedisStreamEventLog(StreamEventLog):
    """The event log on a Redis stream. Open it with :meth:`from_url`."""

    def __init__(
        self, url: BackendURL, writer: BatchWriter, pool: _Pool, client: redis.Redis, stream: str
    ) -> None:
        super().__init__(url, writer, pool)
        self._client = client
        self._stream = stream
        self._ids = f"{stream}:ids"

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
        """Connect and check that Redis answers (``migrate`` has nothing to do here).

        The writer options are :meth:`EventLog.from_url`'s. Raises
        BackendUnavailableError naming host and port if Redis does not answer,
        InvalidInputError for a bad URL option.
        """
        parsed = BackendURL.parse(url)
        stream = parsed.query.get("stream", _DEFAULT_STREAM)
        if not stream:
            raise InvalidInputError(f"{parsed}: stream must not be empty", field="stream")
        parsed, pool = connection_pool(parsed, options=("stream",))
        client = redis.Redis(connection_pool=pool)
        append = client.register_script(_APPEND)
        keys = [stream, f"{stream}:ids"]

        def write(rows: list[Row]) -> None:
            args: list[Any] = []
            for row in rows:
                args += (row["id"], encode_event(row))
            append(keys=keys, args=args)

        writer = open_writer(
            parsed,
            write,
            refused=lambda exc: False,  # Redis takes any JSON the schema lets through
            translate=lambda exc: _translate(parsed, exc),
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_buffer=max_buffer,
            spill_dir=spill_dir,
        )
        try:
            with _errors(parsed):
                client.ping()
        except BaseException:
            pool.disconnect()
            raise
        return cls(parsed, writer, _Pool(pool), client, stream)

    # -- primitives ---------------------------------------------------------------------

    def _errors(self) -> AbstractContextManager[None]:
        return _errors(self.url)

    def _entries(
        self, kind: str | None, after: int | None, descending: bool, first: int
    ) -> Entries:
        count = max(1, min(first, CHUNK))
        if not descending:
            start = "-" if after is None else f"0-{after + 1}"
            while True:
                rows = cast(
                    _Rows, self._client.xrange(self._stream, min=start, max="+", count=count)
                )
                yield from self._decoded(rows)
                if len(rows) < count:
                    return
                start = f"0-{_position(rows[-1][0]) + 1}"
                count = CHUNK
        else:
            if after is not None and after <= 1:
                return
            end = "+" if after is None else f"0-{after - 1}"
            while True:
                rows = cast(
                    _Rows, self._client.xrevrange(self._stream, max=end, min="-", count=count)
                )
                yield from self._decoded(rows)
                last = _position(rows[-1][0]) if rows else 0
                if len(rows) < count or last <= 1:
                    return
                end = f"0-{last - 1}"
                count = CHUNK

    def _decoded(self, rows: _Rows) -> Iterator[tuple[int, Event]]:
        for entry, fields in rows:
            data = fields.get(_FIELD)
            if data is None:
                raise BackendError(
                    f"the stream {self._stream} at {self.url.address} holds an entry {entry!r} "
                    "that is not an event; the stream belongs to the event log",
                    seam=_SEAM,
                    url=str(self.url),
                )
            yield _position(entry), decode_event(data)

    def _count_kind(self, kind: str | None) -> int | None:
        return int(self._client.xlen(self._stream)) if kind is None else None

    def _last_position(self) -> int:
        rows = cast(_Rows, self._client.xrevrange(self._stream, count=1))
        return _position(rows[0][0]) if rows else 0

    def _position_of(self, event: Event) -> int | None:
        entry = self._client.hget(self._ids, event.id)
        return None if entry is None else _position(cast("bytes", entry))

    def _feed(self, kind: str | None, after: int) -> _Feed:
        return _Feed(self._client, self._stream, after)

    def _delete(self, doomed: list[tuple[int, str]]) -> None:
        for start in range(0, len(doomed), CHUNK):
            chunk = doomed[start : start + CHUNK]
            pipe = self._client.pipeline(transaction=True)
            pipe.xdel(self._stream, *(f"0-{position}" for position, _ in chunk))
            # As in SQL, an erased event appended again is stored again.
            pipe.hdel(self._ids, *(event_id for _, event_id in chunk))
            pipe.execute()

    def _facts(self) -> dict[str, Any]:
        return {"stream": self._stream, "messages": int(self._client.xlen(self._stream))}

    def ping(self) -> None:
        """Run ``PING``; BackendUnavailableError if Redis does not answer."""
        self._check_open()
        with self._errors():
            self._client.ping()


class _Feed:
    """``follow``'s reads: ``XREAD BLOCK`` after the last entry seen."""

    def __init__(self, client: redis.Redis, stream: str, after: int) -> None:
        self._client = client
        self._stream = stream
        self._last = after

    def next(self, wait: float) -> list[tuple[int, Event]]:
        reply = cast(
            "list[tuple[bytes, _Rows]] | None",
            self._client.xread(
                {self._stream: f"0-{self._last}"}, count=CHUNK, block=max(1, int(wait * 1000))
            ),
        )
        found = []
        for _, rows in reply or ():
            for entry, fields in rows:
                self._last = _position(entry)
                data = fields.get(_FIELD)
                if data is not None:
                    found.append((self._last, decode_event(data)))
        return found

    def close(self) -> None:
        """Nothing held between reads."""


def _position(entry: bytes | str) -> int:
    """The integer position of an entry id ``0-<n>``."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    ms, _, n = text.partition("-")
    if ms != "0":
        raise BackendError(
            f"the stream holds an entry {text!r} not written by the event log (its ids are "
            "0-<n>); give the log a stream of its own",
            seam=_SEAM,
        )
    return int(n)


def _translate(url: BackendURL, exc: BaseException) -> BaseException:
    if isinstance(exc, ConveyorError):
        return exc
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return unavailable(url, _SEAM, exc)
    if isinstance(exc, redis.RedisError):
        return BackendError(
            f"Redis at {url.address} refused the request: {exc} ({url})",
            seam=_SEAM,
            url=str(url),
            host=url.host,
            port=url.port,
        )
    return exc


@contextmanager
def _errors(url: BackendURL) -> Iterator[None]:
    try:
        yield
    except ConveyorError:
        raise
    except (redis.RedisError, OSError) as exc:
        raise _translate(url, exc) from exc
