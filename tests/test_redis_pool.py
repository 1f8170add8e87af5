"""One way to dial Redis: the cache, the rate limiter and the Redis Streams event log read
the same URL the same way (options, database, TLS, timeouts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from conveyor.backends import BackendURL
from conveyor.errors import InvalidInputError
from conveyor.governance.ratelimit import RedisRateLimiter
from conveyor.kv.redis import RedisKV
from conveyor.redis_pool import connection_pool


def test_the_pool_reads_the_url() -> None:
    dialled, pool = connection_pool(
        BackendURL.parse("redis://u:pw@/3?socket_timeout=0.5&max_connections=7")
    )
    kwargs = pool.connection_kwargs
    assert (dialled.host, dialled.port) == ("127.0.0.1", 6379)  # what errors will name
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (3, "u", "pw")
    assert kwargs["socket_timeout"] == 0.5 and kwargs["socket_connect_timeout"] == 2.0
    assert pool.max_connections == 7 and pool.connection_class is redis.Connection
    _, tls = connection_pool(BackendURL.parse("rediss://cache.internal:6380/0"))
    assert tls.connection_class is redis.SSLConnection
    _, limiter = connection_pool(BackendURL.parse("redis://h/0"), socket_timeout=2.0)
    assert limiter.connection_kwargs["socket_timeout"] == 2.0
    pool.disconnect()
    tls.disconnect()
    limiter.disconnect()


def _kv(url: str) -> Any:
    return RedisKV.from_url(url)


def _limiter(url: str) -> Any:
    return RedisRateLimiter.from_url(url)


def _stream(url: str) -> Any:
    from conveyor.events.redis_stream import RedisStreamEventLog

    return RedisStreamEventLog.from_url(url)


@pytest.mark.parametrize("open_", [_kv, _limiter, _stream], ids=["cache", "ratelimit", "events"])
@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("redis://127.0.0.1:6379/zero", "url"),
        ("redis://127.0.0.1:6379/0?sock_timeout=1", "url"),
        ("redis://127.0.0.1:6379/0?socket_timeout=-1", "socket_timeout"),
        ("redis://127.0.0.1:6379/0?max_connections=0", "max_connections"),
    ],
)
def test_every_consumer_refuses_the_same_bad_url(
    open_: Callable[[str], Any], url: str, field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        open_(url)
    assert caught.value.context.get("field") == field, caught.value


def test_options_are_the_consumers_own() -> None:
    with pytest.raises(InvalidInputError, match=r"unknown Redis option.*stream"):
        RedisKV.from_url("redis://127.0.0.1:6379/0?stream=x")  # the event log's, not the cache's
    with pytest.raises(InvalidInputError, match=r"unknown Redis option.*prefix"):
        _stream("redis://127.0.0.1:6379/0?prefix=x")  # the cache's, not the event log's
