"""RedisKV.get_many's own read connections, against the real Redis through a TCP proxy: a
connection cut while idle is replaced without an error, one that timed out mid-call is
never reused (its late reply must not answer the next call), a forked child reads on its
own connections, and close() ends them."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

from conveyor.backends import CACHE
from conveyor.errors import BackendUnavailableError, ClosedError
from conveyor.kv.redis import RedisKV
from conveyor.testing.services import require
from conveyor.testing.tcp_proxy import TcpProxy

pytestmark = pytest.mark.redis


@pytest.fixture
def proxied() -> Iterator[tuple[RedisKV, TcpProxy]]:
    require("127.0.0.1", 6379, "Redis")
    with TcpProxy("127.0.0.1", 6379) as proxy:
        url = (
            f"redis://127.0.0.1:{proxy.port}/0?prefix=test-{uuid.uuid4().hex}:"
            "&socket_timeout=0.3&connect_timeout=0.3"
        )
        kv = CACHE.open(url)
        assert isinstance(kv, RedisKV)
        try:
            kv.set_many({"a": b"1", "b": b"2"}, ttl=600)
            yield kv, proxy
        finally:
            proxy.restore()
            with contextlib.suppress(ClosedError):  # closed by the test itself
                kv.clear()
            kv.close()


def test_a_connection_cut_while_idle_is_replaced(proxied: tuple[RedisKV, TcpProxy]) -> None:
    kv, proxy = proxied
    assert kv.get_many(["a", "b", "c"]) == [b"1", b"2", None]
    proxy.refuse()  # the proxy dies: the idle read connection is cut
    proxy.restore()
    assert kv.get_many(["b", "a"]) == [b"2", b"1"]


def test_a_timed_out_connection_is_not_reused(proxied: tuple[RedisKV, TcpProxy]) -> None:
    kv, proxy = proxied
    assert kv.get_many(["a"]) == [b"1"]
    proxy.hang()
    with pytest.raises(BackendUnavailableError):
        kv.get_many(["a"])
    proxy.restore()  # the reply to that MGET now arrives, on a connection nobody reads
    assert kv.get_many(["b"]) == [b"2"]
    assert kv.get_many(["a", "b"]) == [b"1", b"2"]


def test_a_refused_redis_raises_then_reads_again(proxied: tuple[RedisKV, TcpProxy]) -> None:
    kv, proxy = proxied
    assert kv.get_many(["a"]) == [b"1"]
    proxy.refuse()
    for _ in range(2):
        with pytest.raises(BackendUnavailableError):
            kv.get_many(["a"])
    proxy.restore()
    assert kv.get_many(["a", "b"]) == [b"1", b"2"]


def test_a_forked_child_reads_on_its_own_connections(proxied: tuple[RedisKV, TcpProxy]) -> None:
    kv, _ = proxied
    assert kv.get_many(["a"]) == [b"1"]  # the parent has an idle read connection
    pid = os.fork()
    if pid == 0:  # the child: read, and exit without running the parent's clean-up
        code = 0 if kv.get_many(["b", "a"]) == [b"2", b"1"] else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert kv.get_many(["a", "b"]) == [b"1", b"2"]  # the parent's connection still works


def test_closed_store_refuses_reads(proxied: tuple[RedisKV, TcpProxy]) -> None:
    kv, _ = proxied
    assert kv.get_many(["a"]) == [b"1"]
    kv.clear()
    kv.close()
    assert kv._readers == set() and kv._idle == []
    with pytest.raises(ClosedError):
        kv.get_many(["a"])
