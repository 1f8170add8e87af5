"""The key-value seam: one small protocol for key-value state such as the prediction cache.

Three backends picked by URL (:data:`conveyor.backends.KV_BACKENDS`, the table
of :data:`conveyor.backends.CACHE` and of every seam a capability declares over it):

- ``memory://[name]`` (:class:`conveyor.kv.memory.MemoryKV`): in-process,
  optional LRU bound ``?max_entries=N``;
- ``sqlite:///path.db`` (:class:`conveyor.kv.sql.SqliteKV`): one file, shared
  by the processes of one machine;
- ``redis://host:port/db`` (:class:`conveyor.kv.redis.RedisKV`): shared by
  every machine (``pip install 'conveyor[redis]'``).

Keys are ``str`` and values ``bytes``. Every store is namespaced by a key
prefix (``?prefix=``, default ``conveyor:``) so several projects can share
one Redis: a store reads, writes and clears only keys under its prefix.
Expired keys read as absent on every backend. Counters made by :meth:`incr`
hold ASCII decimal bytes (``b"42"``), as in Redis.

:meth:`set_many_if_newer` is a compare-and-set for values that carry an
ordering score (the online feature store's latest-row-wins): each key keeps
its score beside its value (memory: in the entry; SQLite: two columns;
Redis: a companion key ``<key>\\x00score`` with the same expiry, written by
the same Lua script). Write such keys only through it; a plain :meth:`set`
on one leaves its score unspecified.

Importing this package imports no backend driver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from conveyor.backends import BackendURL
from conveyor.kv.options import DEFAULT_PREFIX, Score, Versioned

__all__ = ["DEFAULT_PREFIX", "KeyValueStore", "Score", "Versioned"]


@runtime_checkable
class KeyValueStore(Protocol):
    """What the online feature store, the cache and the rate limiter need."""

    @classmethod
    def from_url(cls, url: str | BackendURL, **options: Any) -> Self:
        """Open the store at ``url`` (no connection needs to be made yet)."""
        ...

    @property
    def prefix(self) -> str:
        """The namespace prepended to every key on the backend."""
        ...

    def get(self, key: str) -> bytes | None:
        """The value, or ``None`` if absent or expired."""
        ...

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values in the order of ``keys`` (``None`` for missing), in one round trip."""
        ...

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value``; it expires ``ttl`` seconds from now (``None``: never)."""
        ...

    def set_many(self, mapping: Mapping[str, bytes], *, ttl: float | None = None) -> None:
        """Store every pair atomically, in one round trip, all with the same ``ttl``."""
        ...

    def set_many_if_newer(self, mapping: Mapping[str, Versioned]) -> int:
        """Write each value unless its key holds one with a higher score; returns how many.

        Per key an atomic compare-and-set, the whole batch in one round trip
        (and atomically on every backend): a key that is absent, expired, or
        holds a score lower than or equal to the new one (compared as a pair,
        first number first) takes the new value, its score and its own ``ttl``;
        a key holding a higher score keeps everything. Bad input anywhere in
        the batch writes nothing.
        """
        ...

    def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` if it was there (and not expired)."""
        ...

    def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Atomically add ``amount`` to the counter and return the new value.

        A missing (or expired) counter starts at 0. ``ttl`` applies only when
        this call creates the counter; later increments keep its expiry, so
        ``incr(key, ttl=60)`` counts within a fixed 60-second window.
        """
        ...

    def clear(self) -> int:
        """Delete every key under this store's prefix (and only those); returns how many."""
        ...

    def ping(self) -> None:
        """Raise :class:`~conveyor.errors.BackendUnavailableError` if the backend is down."""
        ...

    def close(self) -> None:
        """Release connections; using the store afterwards raises ClosedError."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
