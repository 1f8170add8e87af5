"""Key-value store on Redis: shared by every machine, native TTLs, atomic counters.

``redis://[user:password@]host:port/db?prefix=...``, with the query options
``socket_timeout`` and ``connect_timeout`` (seconds) and ``max_connections``.
Commands go through one connection pool owned by the store (closed with
it). Batch operations are one round trip each: ``MGET`` for reads, a
``MULTI``/``EXEC`` pipeline for writes, which also makes them atomic.

A connection failure becomes :class:`~conveyor.errors.BackendUnavailableError`
naming host and port. redis-py retries a failed connection twice with a
short backoff (its default backs off for seconds, which would hold a
request that long before a cache miss could fall back).

The pool comes from :func:`conveyor.redis_pool.connection_pool`, the one
way Conveyor dials Redis (the cache, the rate limiter, the Redis Streams
event log).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Self, cast

import redis

from conveyor.backends import BackendURL, unavailable
from conveyor.errors import InvalidInputError
from conveyor.kv.base import BaseKV
from conveyor.kv.options import (
    check_amount,
    check_key,
    check_ttl,
    check_value,
    prefix_of,
    ttl_ms,
)
from conveyor.redis_pool import connection_pool

__all__ = ["RedisKV"]

_SEAM = "key-value"
_CLEAR_BATCH = 500
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\^-"})


class RedisKV(BaseKV):
    """Key-value store on a Redis database, every key under ``prefix``."""

    def __init__(self, url: BackendURL, prefix: str, pool: redis.ConnectionPool) -> None:
        super().__init__(url, prefix)
        self._pool = pool
        self._client = redis.Redis(connection_pool=pool)

    @classmethod
    def from_url(cls, url: str | BackendURL, **options: Any) -> Self:
        """Build the pool; no connection is made until the first command."""
        parsed, pool = connection_pool(BackendURL.parse(url), options=("prefix",), **options)
        return cls(parsed, prefix_of(parsed), pool)

    def close(self) -> None:
        if not self._closed:
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
        full = [self._prefix + check_key(k) for k in keys]
        if not full:
            self._check_open()
            return []
        with self._errors():
            values = self._client.mget(full)
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

    def delete(self, key: str) -> bool:
        full = self._prefix + check_key(key)
        with self._errors():
            removed: int = self._client.delete(full)
        return removed > 0

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
                    removed += self._client.unlink(*batch)
                    batch = []
            if batch:
                removed += self._client.unlink(*batch)
        return removed

    def ping(self) -> None:
        with self._errors():
            self._client.ping()

    # -- internals ------------------------------------------------------------

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
