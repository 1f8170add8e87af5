"""Key-value store on Redis: shared by every machine, native TTLs, atomic counters.

``redis://[user:password@]host:port/db?prefix=...``, with the query options
``socket_timeout`` and ``connect_timeout`` (seconds) and ``max_connections``.
Commands go through one connection pool owned by the store (closed with
it). Batch operations are one round trip each: ``MGET`` for reads, a
``MULTI``/``EXEC`` pipeline for writes, which also makes them atomic.

:meth:`RedisKV.get_many` (the online feature store's read, on the serving path)
skips redis-py's client layer: it packs the ``MGET`` itself and sends it on a
connection of its own kept idle between calls (made from the pool's settings,
so the same address, credentials, TLS and timeouts), then reads the reply with
the connection's parser (hiredis when installed). redis-py's command path costs
about 45 µs a call on top of the round trip (checking a connection out of the
pool and back, observability hooks); this one about 5. A connection that fails
or times out mid-call is dropped, never reused (its reply could be half read);
a failure on a connection that had sat idle is retried once on a fresh one (the
server may have closed it), a timeout is not.

:meth:`RedisKV.set_many_if_newer` is one Lua script for the whole batch
(``EVALSHA``, loaded once per connection pool): per key it reads the score kept
in the companion key ``<key>\\x00score`` (same hash tag, so the same Redis
Cluster slot as its key when the key carries one), and writes the value and
the score with the same ``PX`` only if the new score is not lower. Redis runs
a script atomically, so no other write lands between the check and the set.

A connection failure becomes :class:`~conveyor.errors.BackendUnavailableError`
naming host and port. redis-py retries a failed connection twice with a
short backoff (its default backs off for seconds, which would hold a
request that long before a cache miss could fall back).

The pool comes from :func:`conveyor.redis_pool.connection_pool`, the one
way Conveyor dials Redis (the cache, the rate limiter, the Redis Streams
event log).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Self, cast

import redis

from conveyor.backends import BackendURL, unavailable
from conveyor.errors import InvalidInputError
from conveyor.kv.base import BaseKV
from conveyor.kv.options import (
    Versioned,
    check_amount,
    check_key,
    check_ttl,
    check_value,
    check_versioned,
    prefix_of,
    ttl_ms,
)
from conveyor.redis_pool import connection_pool

__all__ = ["SCORE_SUFFIX", "RedisKV"]

#: The companion key of a key written by set_many_if_newer holds its score: "<s1> <s2>".
SCORE_SUFFIX = "\x00score"
_SCORE_SUFFIX_BYTES = SCORE_SUFFIX.encode()

_SEAM = "key-value"
_CLEAR_BATCH = 500
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\^-"})

# KEYS: key1, score-key1, key2, score-key2, ...; ARGV per key: value, score1, score2, px
# (px "0": no expiry). A key whose value is gone (expired, deleted) has no score that counts.
_SET_IF_NEWER = """
local written = 0
for i = 1, #KEYS, 2 do
  local a = (i - 1) * 2
  local value, s1, s2, px = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local ok = true
  local current = redis.call('GET', KEYS[i + 1])
  if current and redis.call('EXISTS', KEYS[i]) == 1 then
    local c1, c2 = string.match(current, '^(%S+) (%S+)$')
    local n1, m1 = tonumber(s1), tonumber(c1)
    if m1 ~= nil and (n1 < m1 or (n1 == m1 and tonumber(s2) < tonumber(c2))) then
      ok = false
    end
  end
  if ok then
    local score = s1 .. ' ' .. s2
    if px == '0' then
      redis.call('SET', KEYS[i], value)
      redis.call('SET', KEYS[i + 1], score)
    else
      redis.call('SET', KEYS[i], value, 'PX', px)
      redis.call('SET', KEYS[i + 1], score, 'PX', px)
    end
    written = written + 1
  end
end
return written
"""


#: Stores whose read connections a forked child must forget (never use, never shut down:
#: the parent still talks on those sockets).
_LIVE: weakref.WeakSet[RedisKV] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for kv in list(_LIVE):
        kv._idle, kv._readers = [], set()


os.register_at_fork(after_in_child=_forget_after_fork)


class RedisKV(BaseKV):
    """Key-value store on a Redis database, every key under ``prefix``."""

    def __init__(self, url: BackendURL, prefix: str, pool: redis.ConnectionPool) -> None:
        super().__init__(url, prefix)
        self._pool = pool
        self._client = redis.Redis(connection_pool=pool)
        self._set_if_newer = self._client.register_script(_SET_IF_NEWER)
        #: get_many's connections: idle ones (a list: pop and append are atomic), and all.
        self._idle: list[Any] = []
        self._readers: set[Any] = set()
        _LIVE.add(self)

    @classmethod
    def from_url(cls, url: str | BackendURL, **options: Any) -> Self:
        """Build the pool; no connection is made until the first command."""
        parsed, pool = connection_pool(BackendURL.parse(url), options=("prefix",), **options)
        return cls(parsed, prefix_of(parsed), pool)

    def close(self) -> None:
        if not self._closed:
            self._closed = True  # before disconnecting: get_many stops handing them out
            readers, self._readers, self._idle = list(self._readers), set(), []
            for conn in readers:
                conn.disconnect()
            self._client.close()
            # A client handed a pool leaves it open on close(); the pool is ours.
            self._pool.disconnect()
        super().close()

    # -- reads ----------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        full = self._prefix + check_key(key)
        with self._errors():
            value = self._client.get(full)
        # decode_responses is off, so redis-py hands back bytes, never str.
        return cast("bytes | None", value)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            self._check_open()
            return []
        prefix = self._prefix
        parts = [b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1)]
        for key in keys:
            data = (prefix + check_key(key)).encode()
            parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
        with self._errors():
            values = self._command(b"".join(parts))
        return cast("list[bytes | None]", values)

    # -- writes ---------------------------------------------------------------

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        full = self._prefix + check_key(key)
        data = check_value(value)
        seconds = check_ttl(ttl)
        with self._errors():
            self._client.set(full, data, px=None if seconds is None else ttl_ms(seconds))

    def set_many(self, mapping: Mapping[str, bytes], *, ttl: float | None = None) -> None:
        seconds = check_ttl(ttl)
        items = [(self._prefix + check_key(k), check_value(v)) for k, v in mapping.items()]
        if not items:
            self._check_open()
            return
        with self._errors():
            if seconds is None:
                self._client.mset(dict(items))
                return
            pipe = self._client.pipeline(transaction=True)
            for full, data in items:
                pipe.set(full, data, px=ttl_ms(seconds))
            pipe.execute()

    def set_many_if_newer(self, mapping: Mapping[str, Versioned]) -> int:
        # EVALSHA packed here, as get_many packs MGET (materialization sends thousands of
        # keys a call: redis-py's packing of 6 arguments a key took half the write time).
        keys: list[bytes] = []
        args: list[bytes] = []
        for k, item in mapping.items():
            full = (self._prefix + check_key(k)).encode()
            data, score, seconds = check_versioned(k, item)
            keys += (
                b"$%d\r\n%b\r\n" % (len(full), full),
                b"$%d\r\n%b%b\r\n"
                % (len(full) + len(_SCORE_SUFFIX_BYTES), full, _SCORE_SUFFIX_BYTES),
            )
            # repr() of a float reads back exactly (Lua's tonumber parses it to the same double).
            s1, s2 = repr(score[0]).encode(), repr(score[1]).encode()
            px = b"0" if seconds is None else b"%d" % ttl_ms(seconds)
            args += (
                b"$%d\r\n%b\r\n" % (len(data), data),
                b"$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
                % (len(s1), s1, len(s2), s2, len(px), px),
            )
        if not keys:
            self._check_open()
            return 0
        count = b"%d" % len(keys)
        sha = self._set_if_newer.sha.encode()
        head = b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
            3 + len(keys) + 2 * len(keys),
            len(sha),
            sha,
            len(count),
            count,
        )
        packed = b"".join((head, *keys, *args))
        with self._errors():
            try:
                written = self._command(packed)
            except redis.exceptions.NoScriptError:
                # First call on this server (or after SCRIPT FLUSH / a restart): load, again.
                self._client.script_load(_SET_IF_NEWER)
                written = self._command(packed)
        return int(written)

    def delete(self, key: str) -> bool:
        full = self._prefix + check_key(key)
        with self._errors():
            # The score of a key written by set_many_if_newer goes with it (one round trip).
            pipe = self._client.pipeline(transaction=False)
            pipe.delete(full)
            pipe.delete(full + SCORE_SUFFIX)
            removed, _ = pipe.execute()
        return int(removed) > 0

    def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        full = self._prefix + check_key(key)
        step = check_amount(amount)
        seconds = check_ttl(ttl)
        with self._errors(key):
            if seconds is None:
                value: int = self._client.incrby(full, step)
                return value
            # SET NX creates the counter with its expiry only if it is absent;
            # INCRBY keeps an existing expiry. MULTI makes the pair atomic.
            pipe = self._client.pipeline(transaction=True)
            pipe.set(full, b"0", nx=True, px=ttl_ms(seconds))
            pipe.incrby(full, step)
            _, value = pipe.execute()
            return int(value)

    def clear(self) -> int:
        pattern = self._prefix.translate(_GLOB_SPECIAL) + "*"
        removed = 0
        with self._errors():
            batch: list[bytes] = []
            for name in self._client.scan_iter(match=pattern, count=1000):
                batch.append(name)
                if len(batch) >= _CLEAR_BATCH:
                    removed += self._unlink(batch)
                    batch = []
            if batch:
                removed += self._unlink(batch)
        return removed

    def _unlink(self, names: list[bytes]) -> int:
        """Unlink ``names``; the count leaves out score keys (they go with their key)."""
        scores = sum(1 for n in names if n.endswith(_SCORE_SUFFIX_BYTES))
        return max(0, int(self._client.unlink(*names)) - scores)

    def ping(self) -> None:
        with self._errors():
            self._client.ping()

    # -- internals ------------------------------------------------------------

    def _command(self, packed: bytes) -> Any:
        """Send one packed command on a connection of ``get_many``'s and return its reply."""
        try:
            conn = self._idle.pop()
            fresh = False
        except IndexError:
            if len(self._readers) >= self._pool.max_connections:
                raise redis.ConnectionError("too many connections") from None
            conn = self._pool.connection_class(**self._pool.connection_kwargs)
            self._readers.add(conn)
            fresh = True
        try:
            try:
                conn.send_packed_command((packed,))
                reply = conn.read_response()
            except redis.TimeoutError:
                raise
            except redis.ConnectionError:
                if fresh:
                    raise
                conn.disconnect()  # closed by the server while idle: once more, anew
                conn.send_packed_command((packed,))
                reply = conn.read_response()
        except redis.ResponseError:
            self._idle.append(conn)  # an error reply, read whole: the connection is fine
            raise
        except BaseException:
            # Failed or interrupted mid-call: part of a reply may be unread. Never reuse.
            conn.disconnect()
            self._readers.discard(conn)
            raise
        if self._closed:
            conn.disconnect()
        else:
            self._idle.append(conn)
        return reply

    @contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        self._check_open()
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise unavailable(self._url, _SEAM, str(exc).rstrip(".")) from exc
        except redis.ResponseError as exc:
            if key is not None and "not an integer" in str(exc):
                raise InvalidInputError(
                    f"cannot incr {key!r}: its value is not an integer counter", field="key"
                ) from exc
            raise
