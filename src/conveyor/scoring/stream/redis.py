"""Redis Streams as a stream source: a consumer group shared by every scorer.

``redis://host:6379/0?stream=orders&group=fraud-scorer`` reads the stream ``orders`` as
one consumer of the group ``group`` (created at the stream's start if it does not
exist): every process started with the same URL shares the entries, each delivered to
one consumer and acknowledged (``XACK``) once scored.

What JetStream does by itself is done here with the group's pending list:

- **redelivery after a crash**: an entry a consumer took and did not ack for
  ``ack_wait`` seconds (it was killed) is claimed by another (``XAUTOCLAIM``);
- **redelivery with backoff**: :meth:`RedisStreamSource.retry` leaves the entries
  pending and schedules them in a sorted set (``<stream>:<group>:retry``, the time
  they are due); a fetch claims those due first (``XCLAIM``), then dead consumers',
  then reads new entries (``XREADGROUP ... >``), blocking up to ``wait`` for them;
- **a publish once per id**: a Lua script adds a record (``XADD``) only if its id was
  not seen in the last ``duplicate_window`` seconds (``SET <target>:id:<id> NX EX``), in
  one atomic step;
- **state**: ``GET``/``SET`` of ``conveyor:stream_state:<name>``.

An entry's body is its ``data`` field (JSON text), or, without one, its fields as a
JSON object; its id is its ``id`` field, else ``<stream>:<entry id>``. Query options:
``stream`` (required), ``group`` (``conveyor-scorer``), ``consumer`` (default
host-pid-random: a restarted process is a new consumer, and claims what its
predecessor left), ``ack_wait`` (30), ``duplicate_window`` (600), ``maxlen`` (of the
targets' streams, approximate; none by default), and the Redis connection's own.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson

from conveyor.backends import BackendURL, int_option, seconds_option, unavailable
from conveyor.errors import BackendError, InvalidInputError
from conveyor.scoring.stream.source import Message, Outgoing, StreamSource

__all__ = ["RedisStreamSource"]

T = TypeVar("T")

_SEAM = "stream source"
_OPTIONS = ("stream", "group", "consumer", "ack_wait", "duplicate_window", "maxlen")

# KEYS: the target stream; ARGV: window seconds, maxlen (0: none), then (id, body) pairs.
_PUBLISH = """
local added = 0
for i = 3, #ARGV, 2 do
  if redis.call('SET', KEYS[1] .. ':id:' .. ARGV[i], '1', 'NX', 'EX', ARGV[1]) then
    if tonumber(ARGV[2]) > 0 then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'id', ARGV[i], 'data', ARGV[i + 1])
    else
      redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'data', ARGV[i + 1])
    end
    added = added + 1
  end
end
return added
"""


class RedisStreamSource(StreamSource):
    """One consumer of a Redis stream's consumer group (see the module)."""

    def __init__(
        self,
        url: BackendURL,
        *,
        stream: str,
        group: str,
        consumer: str,
        ack_wait: float,
        duplicate_window: float,
        maxlen: int | None,
    ) -> None:
        import redis

        from conveyor.redis_pool import connection_pool

        self.url = url
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.ack_wait = ack_wait
        self.duplicate_window = duplicate_window
        self.maxlen = maxlen
        self.description = str(url)
        self._retry_key = f"{stream}:{group}:retry"
        dialed, pool = connection_pool(url, options=_OPTIONS, socket_timeout=30.0)
        self._dialed = dialed
        self._redis: Any = redis.Redis(connection_pool=pool)
        self._publish = self._redis.register_script(_PUBLISH)
        self._closed = False
        try:
            self._call(self._create_group)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_url(cls, url: BackendURL, **options: Any) -> RedisStreamSource:
        stream = url.query.get("stream")
        if not stream:
            raise InvalidInputError(
                f"{url}: name the stream to consume (redis://host:6379/0?stream=KEY&group=...)",
                field="source",
            )
        settings: dict[str, Any] = {
            "stream": stream,
            "group": url.query.get("group", "conveyor-scorer"),
            "consumer": url.query.get("consumer")
            or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            "ack_wait": seconds_option(url, "ack_wait", 30.0),
            "duplicate_window": seconds_option(url, "duplicate_window", 600.0),
            "maxlen": int_option(url, "maxlen"),
        }
        settings.update(options)
        return cls(url, **settings)

    def _call(self, fn: Callable[[], T]) -> T:
        import redis

        try:
            return fn()
        except redis.exceptions.ConnectionError as exc:  # TimeoutError is one too
            raise unavailable(self.url, _SEAM, str(exc) or type(exc).__name__) from exc
        except redis.exceptions.ResponseError as exc:
            raise BackendError(
                f"Redis at {self.url.address} refused the request: {exc} ({self.url})",
                seam=_SEAM,
                url=str(self.url),
            ) from exc

    def _create_group(self) -> None:
        import redis

        try:
            self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- the seam ------------------------------------------------------------------

    def fetch(self, limit: int, wait: float) -> list[Message]:
        out = self._call(lambda: self._claim_due(limit))
        if len(out) < limit:
            out += self._call(lambda: self._claim_abandoned(limit - len(out)))
        if out:
            return out
        answer = self._call(
            lambda: self._redis.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: ">"},
                count=limit,
                block=max(int(wait * 1000), 1),
            )
        )
        entries = answer[0][1] if answer else []
        return [self._message(eid, fields, 1) for eid, fields in entries if fields is not None]

    def _claim_due(self, limit: int) -> list[Message]:
        due = self._redis.zrangebyscore(self._retry_key, "-inf", time.time(), start=0, num=limit)
        if not due:
            return []
        self._redis.zrem(self._retry_key, *due)
        claimed = self._redis.xclaim(self.stream, self.group, self.consumer, 0, due)
        return self._with_counts(claimed)

    def _claim_abandoned(self, limit: int) -> list[Message]:
        answer = self._redis.xautoclaim(
            self.stream, self.group, self.consumer, int(self.ack_wait * 1000), "0-0", count=limit
        )
        return self._with_counts(answer[1])

    def _with_counts(self, entries: list[Any]) -> list[Message]:
        entries = [(eid, fields) for eid, fields in entries if fields is not None]  # trimmed
        if not entries:
            return []
        counts = {}
        for eid, _ in entries:
            info = self._redis.xpending_range(self.stream, self.group, eid, eid, 1)
            counts[eid] = info[0]["times_delivered"] if info else 1
        return [self._message(eid, fields, counts[eid]) for eid, fields in entries]

    def _message(self, eid: bytes, fields: dict[bytes, bytes], deliveries: int) -> Message:
        entry = eid.decode()
        body = fields.get(b"data")
        if body is None:
            body = orjson.dumps(
                {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
            )
        own = fields.get(b"id")
        return Message(
            id=own.decode() if own else f"{self.stream}:{entry}",
            body=body,
            deliveries=int(deliveries),
            subject=self.stream,
            headers={},
            handle=entry,
        )

    def ack(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        ids = [m.handle for m in messages]

        def run() -> None:
            pipe = self._redis.pipeline(transaction=False)
            pipe.xack(self.stream, self.group, *ids)
            pipe.zrem(self._retry_key, *ids)
            pipe.execute()

        self._call(run)

    def retry(self, messages: Sequence[Message], delay: float) -> None:
        if messages:
            due = time.time() + delay
            self._call(lambda: self._redis.zadd(self._retry_key, {m.handle: due for m in messages}))

    def prepare_target(self, target: str) -> None:
        if target == self.stream:
            raise InvalidInputError(
                f"target stream {target!r} is the source stream: its records would be scored again",
                field="target",
            )

    def publish(self, target: str, records: Sequence[Outgoing]) -> None:
        if not records:
            return
        self.prepare_target(target)
        args: list[Any] = [int(self.duplicate_window), self.maxlen or 0]
        for r in records:
            args += [r.id, r.body]
        self._call(lambda: self._publish(keys=[target], args=args))

    def default_target(self, role: str) -> str:
        return f"{self.stream}:{self.group}:{role}"

    def load_state(self, name: str) -> bytes | None:
        value: bytes | None = self._call(lambda: self._redis.get(_state_key(name)))
        return value

    def save_state(self, name: str, data: bytes) -> None:
        self._call(lambda: self._redis.set(_state_key(name), data))

    def delete_state(self, name: str) -> None:
        self._call(lambda: self._redis.delete(_state_key(name)))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._redis.close()
        self._redis.connection_pool.disconnect()


def _state_key(name: str) -> str:
    return f"conveyor:stream_state:{name}"
