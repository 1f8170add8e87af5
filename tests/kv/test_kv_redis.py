from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from conveyor.backends import CACHE, BackendURL
from conveyor.errors import BackendUnavailableError
from conveyor.testing.kv import with_prefix
from conveyor.testing.matrix import only
from conveyor.testing.services import REDIS_URL, require

#: The tests below that are about Redis itself (the contract runs in test_kv_contract.py).
ON_REDIS = only("kv_url", "redis")


def _raw_client() -> redis.Redis:
    url = BackendURL.parse(REDIS_URL)
    require(url.host or "127.0.0.1", url.port or 6379, "Redis")
    return redis.Redis.from_url(url.with_(query={}).render(hide_password=False))


def _name(kv_url: str) -> str:
    """The test's unique key namespace (every key starting with it is deleted after)."""
    return BackendURL.parse(kv_url).query["prefix"].rstrip(":")


@ON_REDIS
def test_keys_are_stored_under_the_prefix(kv_url: str) -> None:
    base = _name(kv_url)
    with CACHE.open(kv_url) as kv, _raw_client() as raw:
        kv.set("k", b"v", ttl=600)
        assert raw.get(f"{base}:k") == b"v"
        assert 0 < raw.pttl(f"{base}:k") <= 600_000


@ON_REDIS
def test_clear_escapes_glob_characters_in_the_prefix(kv_url: str) -> None:
    # Unescaped, the pattern "<base>[1]*:*" would also match "<base>1x:...".
    base = _name(kv_url)
    with (
        CACHE.open(with_prefix(kv_url, f"{base}[1]*:")) as odd,
        CACHE.open(with_prefix(kv_url, f"{base}1x:")) as plain,
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
