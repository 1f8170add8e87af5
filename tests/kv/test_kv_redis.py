from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from conveyor.backends import CACHE, BackendURL
from conveyor.errors import BackendUnavailableError
from conveyor.testing.kv import KeyValueContract, with_prefix
from conveyor.testing.services import REDIS_URL, require

pytestmark = pytest.mark.redis


def _raw_client() -> redis.Redis:
    url = BackendURL.parse(REDIS_URL)
    require(url.host or "127.0.0.1", url.port or 6379, "Redis")
    return redis.Redis.from_url(url.render(hide_password=False))


@pytest.fixture
def base() -> Iterator[str]:
    """A unique key namespace; every key under it is deleted after the test."""
    name = f"test-{uuid.uuid4().hex}"
    yield name
    with _raw_client() as client:
        leftovers = list(client.scan_iter(match=f"{name}*"))
        if leftovers:
            client.delete(*leftovers)


class TestRedisKV(KeyValueContract):
    @pytest.fixture
    def kv_url(self, base: str) -> str:
        url = BackendURL.parse(REDIS_URL)
        require(url.host or "127.0.0.1", url.port or 6379, "Redis")
        return with_prefix(REDIS_URL, f"{base}:")


def test_keys_are_stored_under_the_prefix(base: str) -> None:
    with CACHE.open(with_prefix(REDIS_URL, f"{base}:")) as kv, _raw_client() as raw:
        kv.set("k", b"v", ttl=600)
        assert raw.get(f"{base}:k") == b"v"
        assert 0 < raw.pttl(f"{base}:k") <= 600_000


def test_clear_escapes_glob_characters_in_the_prefix(base: str) -> None:
    # Unescaped, the pattern "<base>[1]*:*" would also match "<base>1x:...".
    with (
        CACHE.open(with_prefix(REDIS_URL, f"{base}[1]*:")) as odd,
        CACHE.open(with_prefix(REDIS_URL, f"{base}1x:")) as plain,
    ):
        odd.set("k", b"odd")
        plain.set("k", b"plain")
        assert odd.clear() == 1
        assert plain.get("k") == b"plain"


@pytest.mark.parametrize(
    "call",
    [
        lambda kv: kv.get("k"),
        lambda kv: kv.ping(),
        lambda kv: kv.set_many({"a": b"1"}, ttl=5),
        lambda kv: kv.incr("n", ttl=5),
    ],
    ids=["get", "ping", "set_many", "incr"],
)
def test_unreachable_redis_names_host_and_port(call: Callable[[Any], object]) -> None:
    with CACHE.open("redis://127.0.0.1:1/0") as kv:
        with pytest.raises(BackendUnavailableError, match=r"127\.0\.0\.1:1\b") as info:
            call(kv)
        assert info.value.context["host"] == "127.0.0.1"
        assert info.value.context["port"] == 1
