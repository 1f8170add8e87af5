"""Rate limits: a token bucket per API key, in this process or shared through Redis.

A seam like the others (``backends.ratelimit`` in ``conveyor.yaml``,
``CONVEYOR_RATELIMIT``), opened by URL and probed by ``conveyor doctor``::

    with RATELIMIT.open("redis://127.0.0.1:6379/0") as limiter:
        limiter.take(key.id, key.rate_per_second, key.burst)   # RateLimitedError(retry_after)

``rate_per_second`` tokens are added per second up to ``burst``; each
request takes one. :class:`MemoryRateLimiter` (``memory://``) counts per
process on the monotonic clock; :class:`RedisRateLimiter` (``redis://``) is
shared by every worker and machine: one Lua script refills and takes
atomically, using the Redis server's clock, so workers' clocks never disagree.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from conveyor.backends import BackendSpec, BackendURL, Closeable, Seam, unavailable
from conveyor.errors import (
    ClosedError,
    InvalidInputError,
    MissingDependencyError,
    RateLimitedError,
)

__all__ = [
    "RATELIMIT",
    "MemoryRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "check_limits",
]

_REDIS = BackendSpec("conveyor.governance.ratelimit:RedisRateLimiter", "redis", ("redis",))
#: The rate limiter's seam: where the buckets live.
RATELIMIT = Seam(
    "ratelimit",
    "rate limits per API key (token buckets)",
    {
        "memory": BackendSpec("conveyor.governance.ratelimit:MemoryRateLimiter"),
        "redis": _REDIS,
        "rediss": _REDIS,
    },
    default="memory://",
)


def check_limits(rate: float | None, burst: int | None) -> tuple[float | None, int | None]:
    """Validated (rate, burst); a rate without a burst gets a burst of one second's worth."""
    if rate is None:
        if burst is not None:
            raise InvalidInputError(
                "burst needs rate_per_second too (the rate refills the burst)", field="burst"
            )
        return None, None
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
        raise InvalidInputError(
            f"rate_per_second {rate!r} must be a positive number", field="rate_per_second"
        )
    if rate <= 0:
        raise InvalidInputError(
            f"rate_per_second {rate!r} must be a positive number", field="rate_per_second"
        )
    if burst is None:
        burst = max(1, math.ceil(rate))
    elif isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise InvalidInputError(f"burst {burst!r} must be an integer >= 1", field="burst")
    return float(rate), burst


class RateLimiter(Closeable, ABC):
    """A token bucket per key: ``rate`` tokens a second, at most ``burst`` saved up."""

    #: False when a take is network I/O (an event loop calls it from a thread).
    local: bool = False

    @abstractmethod
    def _take(self, key_id: str, rate: float, burst: int, amount: float = 1.0) -> float:
        """Take ``amount`` tokens; return 0.0, or the seconds until that many are available
        (none taken)."""

    def take(
        self,
        key_id: str,
        rate: float | None,
        burst: int | None = None,
        *,
        amount: float = 1.0,
        unit: str = "requests",
    ) -> None:
        """Spend ``amount`` (one request) of ``key_id``'s budget, or raise
        RateLimitedError(retry_after).

        ``rate=None`` means unlimited; ``burst=None`` means one second's worth. An amount
        over the burst can never be taken: InvalidInputError.
        """
        if rate is None:
            return
        checked_rate, checked_burst = check_limits(rate, burst)
        assert checked_rate is not None and checked_burst is not None
        if amount > checked_burst:
            raise InvalidInputError(
                f"{amount:g} {unit} is more than the limit allows at once ({checked_burst})",
                field="amount",
                limit=checked_burst,
            )
        wait = self._take(key_id, checked_rate, checked_burst, amount)
        if wait > 0:
            raise RateLimitedError(
                f"rate limit of {checked_rate:g} {unit}/s (burst {checked_burst}) reached; "
                f"retry in {wait:.3f} s",
                retry_after=wait,
                rate_per_second=checked_rate,
                burst=checked_burst,
            )


class MemoryRateLimiter(RateLimiter):
    """Buckets in this process's memory, on the monotonic clock. Thread-safe."""

    #: Answers from memory: an event loop may call it directly.
    local = True

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()
        self._closed = False

    def _take(self, key_id: str, rate: float, burst: int, amount: float = 1.0) -> float:
        if self._closed:
            raise ClosedError("the rate limiter is closed")
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(key_id, (float(burst), now))
            tokens = min(float(burst), tokens + max(0.0, now - at) * rate)
            if tokens >= amount:
                self._buckets[key_id] = (tokens - amount, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (amount - tokens) / rate

    @classmethod
    def from_url(cls, url: str | BackendURL) -> MemoryRateLimiter:
        """``memory://``: buckets in this process (each worker counts its own)."""
        parsed = BackendURL.parse(url)
        if parsed.path or parsed.query:
            raise InvalidInputError(
                f"{parsed}: the memory rate limiter takes no path or options", field="url"
            )
        return cls()

    def ping(self) -> None:
        if self._closed:
            raise ClosedError("the rate limiter is closed")

    def close(self) -> None:
        self._closed = True
        self._buckets.clear()

    def __repr__(self) -> str:
        return f"MemoryRateLimiter({len(self._buckets)} buckets)"


# Refill and take in one atomic step, on the Redis server's clock (TIME), so
# workers with skewed clocks share one consistent bucket. Numbers are stored
# with 17 significant digits, which round-trip a double exactly. Returns the
# wait in seconds as a string (a Lua number would be truncated to an integer).
_TAKE_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local amount = tonumber(ARGV[3] or '1')
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
local elapsed = now - at
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local wait = 0
if tokens >= amount then
  tokens = tokens - amount
else
  wait = (amount - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'at', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return string.format('%.17g', wait)
"""

_REDIS_DEFAULT_PREFIX = "conveyor:ratelimit:"


class RedisRateLimiter(RateLimiter):
    """Buckets in Redis, shared by every worker and machine that uses the same database.

    ``redis://[user:password@]host:port/db?prefix=conveyor:ratelimit:``, with
    ``socket_timeout`` and ``connect_timeout`` (seconds). A bucket is one hash
    per key, expiring once it would be full again. Redis errors become
    BackendUnavailableError naming host and port.
    """

    def __init__(self, url: BackendURL, prefix: str, client: Any) -> None:
        self.url = url
        self.prefix = prefix
        self._client = client
        self._script = client.register_script(_TAKE_LUA)
        self._closed = False

    @classmethod
    def from_url(cls, url: str | BackendURL) -> RedisRateLimiter:
        """Build the client; no connection is made until the first take."""
        try:
            import redis

            from conveyor.redis_pool import connection_pool
        except ImportError as exc:
            raise MissingDependencyError(
                "the Redis rate limiter needs redis-py: pip install 'conveyor[redis]'",
                package="redis",
            ) from exc
        parsed = BackendURL.parse(url)
        prefix = parsed.query.get("prefix", _REDIS_DEFAULT_PREFIX)
        if not prefix:
            raise InvalidInputError(f"{parsed}: prefix must not be empty", field="prefix")
        # A take is on every request's path: it fails fast (0.1 s, no retry) and the server
        # falls back to per-process buckets (conveyor.web.dependencies).
        dialled, pool = connection_pool(
            parsed, options=("prefix",), socket_timeout=0.1, connect_timeout=0.1, retries=0
        )
        return cls(dialled, prefix, redis.Redis(connection_pool=pool))

    def _take(self, key_id: str, rate: float, burst: int, amount: float = 1.0) -> float:
        import redis

        if self._closed:
            raise ClosedError(f"the rate limiter on {self.url} is closed")
        try:
            raw = self._script(
                keys=[self.prefix + key_id], args=[repr(rate), burst, repr(float(amount))]
            )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise unavailable(self.url, "ratelimit", exc) from exc
        return float(raw)

    def ping(self) -> None:
        """One round trip; BackendUnavailableError naming host and port if it fails."""
        import redis

        try:
            self._client.ping()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise unavailable(self.url, "ratelimit", exc) from exc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()
            self._client.connection_pool.disconnect()

    def __repr__(self) -> str:
        return f"RedisRateLimiter({str(self.url)!r}, prefix={self.prefix!r})"
