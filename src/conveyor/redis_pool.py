"""The one way Conveyor dials Redis: the cache (``conveyor.kv.redis``), the rate
limiter (``conveyor.governance.ratelimit``) and the Redis Streams event log
(``conveyor.events.redis_stream``) build their connection pools here, so the
same URL reads the same options, times out alike and retries alike.

``redis://[user:password@]host:port/db`` (``rediss://`` for TLS); query
options ``socket_timeout`` and ``connect_timeout`` (seconds),
``max_connections``, plus those the caller reads itself (``prefix``,
``stream``). This module imports ``redis`` on first use only.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from conveyor.backends import BackendURL, check_options, int_option, seconds_option
from conveyor.errors import InvalidInputError, MissingDependencyError

if TYPE_CHECKING:
    pass

__all__ = ["DEFAULT_PORT", "connection_pool"]

DEFAULT_PORT = 6379


def connection_pool(
    url: BackendURL,
    *,
    options: Collection[str] = (),
    socket_timeout: float = 5.0,
    connect_timeout: float = 2.0,
    retries: int = 2,
    asynchronous: bool = False,
    **overrides: Any,
) -> tuple[BackendURL, Any]:
    """A connection pool for ``redis://`` or ``rediss://`` (TLS) ``url``, and the URL it dials.

    The path is the database number (``redis://host:6379/2``); the query may
    set ``socket_timeout`` (default ``socket_timeout``) and ``connect_timeout``
    (default ``connect_timeout``, 2 s) in seconds, ``max_connections`` and the
    caller's own ``options`` (``prefix``, ``stream``); any other option is an
    InvalidInputError naming it. A failed connection is retried ``retries``
    times (default twice) with a short backoff (redis-py's default backs off
    for seconds, which would hold a request that long). ``overrides`` go to
    the pool as they are. No connection is made until the first command. ``asynchronous``:
    a ``redis.asyncio`` pool (used on one event loop only).
    """
    try:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry
    except ImportError as exc:
        raise MissingDependencyError(
            f"{url.scheme}:// needs redis-py: pip install 'conveyor[redis]'", package="redis"
        ) from exc
    known = {"socket_timeout", "connect_timeout", "max_connections", *options}
    check_options(url, known, "Redis")
    db_text = url.path.strip("/") or "0"
    if not (db_text.isascii() and db_text.isdigit()):
        raise InvalidInputError(
            f"{url}: the path names the Redis database number (redis://host:6379/0), "
            f"got {db_text!r}",
            field="url",
        )
    kwargs: dict[str, Any] = {
        "host": url.host or "127.0.0.1",
        "port": url.port or DEFAULT_PORT,
        "db": int(db_text),
        "username": url.username,
        "password": url.password,
        "socket_timeout": seconds_option(url, "socket_timeout", socket_timeout),
        "socket_connect_timeout": seconds_option(url, "connect_timeout", connect_timeout),
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=retries),
        "health_check_interval": 30,
    }
    if asynchronous:
        import redis.asyncio
        from redis.asyncio.retry import Retry as AsyncRetry

        kwargs["retry"] = AsyncRetry(ExponentialBackoff(cap=0.2, base=0.02), retries=retries)
    if url.scheme == "rediss":
        kwargs["connection_class"] = (
            redis.asyncio.SSLConnection if asynchronous else redis.SSLConnection
        )
    max_connections = int_option(url, "max_connections")
    if max_connections is not None:
        kwargs["max_connections"] = max_connections
    kwargs.update(overrides)
    # The address in error messages must be the one actually dialled.
    dialled = url.with_(host=kwargs["host"], port=kwargs["port"])
    if asynchronous:
        return dialled, redis.asyncio.ConnectionPool(**kwargs)
    return dialled, redis.ConnectionPool(**kwargs)
