"""In-process key-value store: the default cache, and the fastest backend for tests.

``memory://name`` names a space shared by every store opened on it in this
process, the way fsspec's memory filesystem is shared, so two stores on the
same URL see the same keys (and prefixes keep them apart, as on Redis).
``memory://`` with no name gives a private space owned by one store.

Expired entries are dropped when read, and in a sweep every
:data:`SWEEP_EVERY` writes so that never-read keys do not pile up. With
``?max_entries=N`` the space keeps at most N entries (all prefixes
together), evicting the least recently used.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Self

from conveyor.backends import BackendURL, int_option
from conveyor.errors import InvalidInputError
from conveyor.kv.base import BaseKV
from conveyor.kv.options import (
    Score,
    Versioned,
    check_amount,
    check_key,
    check_query,
    check_ttl,
    check_value,
    check_versioned,
    counter_value,
    prefix_of,
)

__all__ = ["SWEEP_EVERY", "MemoryKV"]

SWEEP_EVERY = 1024

# value, expiry on the monotonic clock, ordering score (set_many_if_newer only)
_Entry = tuple[bytes, float | None, Score | None]


class _Space:
    """One namespace of entries, in least- to most-recently-used order."""

    def __init__(self, max_entries: int | None) -> None:
        self.lock = threading.Lock()
        self.entries: OrderedDict[str, _Entry] = OrderedDict()
        self.max_entries = max_entries
        self.writes = 0


_SPACES: dict[str, _Space] = {}
_SPACES_LOCK = threading.Lock()


def _space(url: BackendURL, name: str, max_entries: int | None) -> _Space:
    if not name:
        return _Space(max_entries)
    with _SPACES_LOCK:
        space = _SPACES.get(name)
        if space is None:
            space = _SPACES[name] = _Space(max_entries)
        elif max_entries is not None and max_entries != space.max_entries:
            raise InvalidInputError(
                f"{url}: the memory space {name!r} is already open with "
                f"max_entries={space.max_entries}; open it with the same bound or none",
                field="max_entries",
            )
        return space


class MemoryKV(BaseKV):
    local = True
    """Thread-safe in-process key-value store with TTLs and an optional LRU bound."""

    def __init__(self, url: BackendURL, prefix: str, space: _Space) -> None:
        super().__init__(url, prefix)
        self._space = space

    @classmethod
    def from_url(cls, url: str | BackendURL, **options: Any) -> Self:
        parsed = BackendURL.parse(url)
        check_query(parsed, {"max_entries"})
        if options:
            raise InvalidInputError(
                f"MemoryKV takes no options, got {', '.join(sorted(options))}", field="options"
            )
        max_entries = int_option(parsed, "max_entries")
        name = parsed.path.strip("/")
        return cls(parsed, prefix_of(parsed), _space(parsed, name, max_entries))

    @property
    def max_entries(self) -> int | None:
        return self._space.max_entries

    def __len__(self) -> int:
        """Live entries under this store's prefix."""
        self._check_open()
        now = time.monotonic()
        with self._space.lock:
            return sum(
                1
                for k, (_, exp, _s) in self._space.entries.items()
                if k.startswith(self._prefix) and (exp is None or exp > now)
            )

    # -- reads ----------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        self._check_open()
        full = self._prefix + check_key(key)
        with self._space.lock:
            return self._read(full, time.monotonic())

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self._check_open()
        full = [self._prefix + check_key(k) for k in keys]
        now = time.monotonic()
        with self._space.lock:
            return [self._read(k, now) for k in full]

    def _read(self, full: str, now: float) -> bytes | None:
        entries = self._space.entries
        entry = entries.get(full)
        if entry is None:
            return None
        value, expires, _ = entry
        if expires is not None and expires <= now:
            del entries[full]
            return None
        entries.move_to_end(full)  # most recently used
        return value

    # -- writes ---------------------------------------------------------------

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self._check_open()
        full = self._prefix + check_key(key)
        data = check_value(value)
        seconds = check_ttl(ttl)
        with self._space.lock:
            now = time.monotonic()
            self._write(full, data, None if seconds is None else now + seconds, now)

    def set_many(self, mapping: Mapping[str, bytes], *, ttl: float | None = None) -> None:
        self._check_open()
        seconds = check_ttl(ttl)
        # Validate everything first: the write is all or nothing.
        items = [(self._prefix + check_key(k), check_value(v)) for k, v in mapping.items()]
        with self._space.lock:
            now = time.monotonic()
            expires = None if seconds is None else now + seconds
            for full, data in items:
                self._write(full, data, expires, now)

    def set_many_if_newer(self, mapping: Mapping[str, Versioned]) -> int:
        self._check_open()
        items = [(self._prefix + check_key(k), *check_versioned(k, v)) for k, v in mapping.items()]
        written = 0
        with self._space.lock:
            now = time.monotonic()
            entries = self._space.entries
            for full, data, score, seconds in items:
                entry = entries.get(full)
                if (
                    entry is not None
                    and entry[2] is not None
                    and (entry[1] is None or entry[1] > now)
                    and entry[2] > score
                ):
                    continue
                self._write(full, data, None if seconds is None else now + seconds, now, score)
                written += 1
        return written

    def delete(self, key: str) -> bool:
        self._check_open()
        full = self._prefix + check_key(key)
        with self._space.lock:
            entry = self._space.entries.pop(full, None)
        return entry is not None and (entry[1] is None or entry[1] > time.monotonic())

    def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        self._check_open()
        full = self._prefix + check_key(key)
        step = check_amount(amount)
        seconds = check_ttl(ttl)
        with self._space.lock:
            now = time.monotonic()
            entry = self._space.entries.get(full)
            if entry is None or (entry[1] is not None and entry[1] <= now):
                current, expires = 0, (None if seconds is None else now + seconds)
            else:
                current, expires = counter_value(key, entry[0]), entry[1]
            value = current + step
            self._write(full, str(value).encode("ascii"), expires, now)
            return value

    def clear(self) -> int:
        self._check_open()
        with self._space.lock:
            doomed = [k for k in self._space.entries if k.startswith(self._prefix)]
            for k in doomed:
                del self._space.entries[k]
        return len(doomed)

    def ping(self) -> None:
        self._check_open()

    def _write(
        self,
        full: str,
        data: bytes,
        expires: float | None,
        now: float,
        score: Score | None = None,
    ) -> None:
        # Called with the space lock held.
        space = self._space
        space.entries[full] = (data, expires, score)
        space.entries.move_to_end(full)
        space.writes += 1
        if space.writes % SWEEP_EVERY == 0:
            for k in [k for k, (_, e, _s) in space.entries.items() if e is not None and e <= now]:
                del space.entries[k]
        if space.max_entries is not None:
            while len(space.entries) > space.max_entries:
                space.entries.popitem(last=False)
