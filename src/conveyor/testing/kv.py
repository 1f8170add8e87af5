"""The contract every key-value backend honours (online store, cache, rate limits).

Subclass :class:`KeyValueContract` and provide the fixture ``kv_url``: a URL
whose ``?prefix=`` is unique to the test, so runs against a shared service
never see each other's keys::

    class TestRedis(KeyValueContract):
        @pytest.fixture
        def kv_url(self):
            return with_prefix(REDIS_URL, f"test-{uuid.uuid4().hex}:")

(Conveyor's own suite takes ``kv_url`` from the backend matrix,
:mod:`conveyor.testing.matrix`.) Expiry is checked by polling until the key
reads as absent (:func:`conveyor.testing.wait.wait_until`, never by asserting
how fast anything ran), with a generous deadline.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conveyor.backends import CACHE, BackendURL
from conveyor.errors import ClosedError, InvalidInputError
from conveyor.kv import KeyValueStore, Versioned
from conveyor.testing.wait import wait_until

__all__ = ["KeyValueContract", "with_prefix"]


def with_prefix(url: str, prefix: str) -> str:
    """``url`` with its ``?prefix=`` replaced (the password kept, for the driver)."""
    parsed = BackendURL.parse(url)
    return parsed.with_(query={**parsed.query, "prefix": prefix}).render(hide_password=False)


def _run_threads(n: int, target: Callable[[], None]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run() -> None:
        try:
            barrier.wait()
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


class KeyValueContract:
    """Behaviour shared by ``memory://``, ``sqlite://``, ``redis://`` and any new backend."""

    @pytest.fixture
    def kv(self, kv_url: str) -> Iterator[Any]:
        with CACHE.open(kv_url) as store:
            try:
                yield store
            finally:
                store.clear()

    @pytest.fixture
    def other(self, kv_url: str) -> Iterator[Any]:
        """A store on the same backend under a different, non-overlapping prefix."""
        prefix = BackendURL.parse(kv_url).query.get("prefix", "conveyor:")
        url = with_prefix(kv_url, prefix.rstrip(":") + "-other:")
        with CACHE.open(url) as store:
            try:
                yield store
            finally:
                store.clear()

    # -- basics ---------------------------------------------------------------

    def test_is_a_key_value_store(self, kv: KeyValueStore) -> None:
        assert isinstance(kv, KeyValueStore)

    def test_get_set_delete(self, kv: KeyValueStore) -> None:
        assert kv.get("user:1") is None
        kv.set("user:1", b"alice")
        assert kv.get("user:1") == b"alice"
        kv.set("user:1", b"bob")
        assert kv.get("user:1") == b"bob"
        assert kv.delete("user:1") is True
        assert kv.delete("user:1") is False
        assert kv.get("user:1") is None

    @pytest.mark.parametrize(
        ("key", "value"),
        [("empty", b""), ("binary", bytes(range(256))), ("ünï cødé * ? [x]", b"\x00\xff")],
    )
    def test_values_and_keys_round_trip(self, kv: KeyValueStore, key: str, value: bytes) -> None:
        kv.set(key, value)
        assert kv.get(key) == value  # b"" stays b"", distinct from None

    def test_get_many_set_many_keep_order(self, kv: KeyValueStore) -> None:
        kv.set_many({"a": b"1", "b": b"2", "c": b"3"})
        assert kv.get_many(["c", "missing", "a", "b", "a"]) == [b"3", None, b"1", b"2", b"1"]
        assert kv.get_many([]) == []
        kv.set_many({})
        assert kv.get_many(["a"]) == [b"1"]

    def test_set_many_is_all_or_nothing_on_bad_input(self, kv: KeyValueStore) -> None:
        with pytest.raises(InvalidInputError):
            kv.set_many({"good": b"x", "bad": "not bytes"})  # type: ignore[dict-item]
        assert kv.get("good") is None

    def test_two_stores_on_one_url_share_keys(self, kv: KeyValueStore, kv_url: str) -> None:
        kv.set("shared", b"yes")
        with CACHE.open(kv_url) as again:
            assert again.get("shared") == b"yes"

    # -- expiry ---------------------------------------------------------------

    def test_ttl_expiry(self, kv: KeyValueStore) -> None:
        kv.set("short", b"s", ttl=0.2)
        kv.set_many({"batch1": b"1", "batch2": b"2"}, ttl=0.2)
        kv.set("long", b"l", ttl=600)
        kv.set("forever", b"f")
        wait_until(lambda: kv.get("short") is None, message="a key set with ttl=0.2 to expire")
        wait_until(
            lambda: kv.get_many(["batch1", "batch2"]) == [None, None],
            message="keys set by set_many with ttl=0.2 to expire",
        )
        assert kv.get_many(["long", "forever", "short"]) == [b"l", b"f", None]
        assert kv.delete("short") is False  # an expired key is not there to delete

    def test_set_without_ttl_clears_an_earlier_ttl(self, kv: KeyValueStore) -> None:
        kv.set("k", b"old", ttl=0.2)
        kv.set("k", b"new")
        kv.set("probe", b"p", ttl=0.2)
        wait_until(lambda: kv.get("probe") is None, message="the probe key to expire")
        assert kv.get("k") == b"new"

    # -- counters -------------------------------------------------------------

    def test_incr(self, kv: KeyValueStore) -> None:
        assert kv.incr("hits") == 1
        assert kv.incr("hits", 5) == 6
        assert kv.incr("hits", -2) == 4
        assert kv.get("hits") == b"4"  # counters are ASCII decimal, as in Redis
        kv.set("n", b"41")
        assert kv.incr("n") == 42
        kv.set("text", b"hello")
        with pytest.raises(InvalidInputError, match="not an integer"):
            kv.incr("text")
        assert kv.get("text") == b"hello"

    def test_incr_ttl_makes_a_fixed_window(self, kv: KeyValueStore) -> None:
        assert kv.incr("window", ttl=0.3) == 1
        second = kv.incr("window", ttl=600)
        if second == 2:
            # The counter still existed, so the ttl=600 must not have extended it.
            wait_until(
                lambda: kv.get("window") is None, message="the window opened with ttl=0.3 to end"
            )
            assert kv.incr("window") == 1  # a new window starts from zero
        else:
            # This machine stalled past 0.3 s between the two calls: the first window
            # had already ended, and the second call rightly started a new one.
            assert second == 1

    @pytest.mark.parametrize("ttl", [None, 600])
    def test_incr_is_atomic_across_threads(self, kv: KeyValueStore, ttl: float | None) -> None:
        def hammer() -> None:
            for _ in range(250):
                kv.incr("counter", ttl=ttl)

        assert _run_threads(8, hammer) == []
        assert kv.get("counter") == b"2000"

    # -- compare-and-set by score (set_many_if_newer) --------------------------

    def test_set_many_if_newer_keeps_the_highest_score(self, kv: KeyValueStore) -> None:
        assert kv.set_many_if_newer({"k": Versioned(b"v10", (10, 0))}) == 1
        assert kv.set_many_if_newer({"k": Versioned(b"v9", (9, 5))}) == 0  # older first number
        assert kv.set_many_if_newer({"k": Versioned(b"tie-lower", (10, -1))}) == 0  # tie-break
        assert kv.get("k") == b"v10"
        assert kv.set_many_if_newer({"k": Versioned(b"tie-equal", (10, 0))}) == 1  # equal wins
        assert kv.get("k") == b"tie-equal"
        assert kv.set_many_if_newer({"k": Versioned(b"v10.1", (10, 1))}) == 1
        assert kv.set_many_if_newer({"k": Versioned(b"v11", (11, -5))}) == 1
        assert kv.get("k") == b"v11"
        assert kv.set_many_if_newer({}) == 0

    def test_set_many_if_newer_decides_per_key_in_one_batch(self, kv: KeyValueStore) -> None:
        kv.set_many_if_newer({"a": Versioned(b"a2", (2, 0)), "b": Versioned(b"b2", (2, 0))})
        kv.set("plain", b"no score")  # a value without a score is replaced by any scored one
        batch = {
            "a": Versioned(b"a1", (1, 0)),
            "b": Versioned(b"b3", (3, 0)),
            "new": Versioned(b"n", (0, 0)),
            "plain": Versioned(b"scored", (0, 0)),
        }
        assert kv.set_many_if_newer(batch) == 3
        assert kv.get_many(["a", "b", "new", "plain"]) == [b"a2", b"b3", b"n", b"scored"]

    def test_set_many_if_newer_compares_microsecond_timestamps_exactly(
        self, kv: KeyValueStore
    ) -> None:
        later = 1_750_000_000_000_001  # microseconds since 1970: exact as doubles below 2**53
        kv.set_many_if_newer({"k": Versioned(b"later", (later, later))})
        assert kv.set_many_if_newer({"k": Versioned(b"earlier", (later - 1, later))}) == 0
        assert kv.set_many_if_newer({"k": Versioned(b"same", (later, later - 1))}) == 0
        assert kv.get("k") == b"later"

    def test_set_many_if_newer_gives_each_key_its_ttl(self, kv: KeyValueStore) -> None:
        kv.set_many_if_newer(
            {
                "short": Versioned(b"s", (5, 0), 0.2),
                "long": Versioned(b"l", (5, 0), 600),
                "forever": Versioned(b"f", (5, 0)),
            }
        )
        wait_until(lambda: kv.get("short") is None, message="a key with ttl=0.2 to expire")
        assert kv.get_many(["long", "forever"]) == [b"l", b"f"]
        # An expired value's score counts no more: an older write lands.
        assert kv.set_many_if_newer({"short": Versioned(b"older", (1, 0), 600)}) == 1
        assert kv.get("short") == b"older"

    def test_delete_forgets_the_score(self, kv: KeyValueStore) -> None:
        kv.set_many_if_newer({"k": Versioned(b"new", (9, 9))})
        assert kv.delete("k") is True
        assert kv.set_many_if_newer({"k": Versioned(b"old", (1, 1))}) == 1
        assert kv.get("k") == b"old"
        assert kv.clear() == 1  # one key, whatever a backend keeps beside it

    @pytest.mark.parametrize(
        "item",
        [
            Versioned("text", (1, 0)),  # type: ignore[arg-type]
            Versioned(b"v", (math.nan, 0)),
            Versioned(b"v", (1,)),  # type: ignore[arg-type]
            Versioned(b"v", (1, 0), 0),
            (b"v",),
        ],
        ids=["str-value", "nan-score", "one-number", "zero-ttl", "no-score"],
    )
    def test_set_many_if_newer_bad_input_writes_nothing(self, kv: KeyValueStore, item: Any) -> None:
        with pytest.raises(InvalidInputError):
            kv.set_many_if_newer({"good": Versioned(b"g", (1, 0)), "bad": item})
        assert kv.get_many(["good", "bad"]) == [None, None]

    def test_set_many_if_newer_is_atomic_across_threads(self, kv: KeyValueStore) -> None:
        # Every thread writes every score, in its own order: the highest must win.
        import random

        def write() -> None:
            scores = list(range(60))
            random.shuffle(scores)
            for n in scores:
                kv.set_many_if_newer(
                    {"k": Versioned(str(n).encode(), (n, 0)), "j": Versioned(b"%d" % n, (0, n))}
                )

        assert _run_threads(6, write) == []
        assert kv.get_many(["k", "j"]) == [b"59", b"59"]

    # -- namespacing ----------------------------------------------------------

    def test_prefixes_isolate_stores(self, kv: KeyValueStore, other: KeyValueStore) -> None:
        assert kv.prefix != other.prefix
        kv.set("k", b"mine")
        other.set("k", b"theirs")
        kv.incr("count")
        assert kv.get("k") == b"mine"
        assert other.get("k") == b"theirs"
        assert other.get("count") is None
        assert other.delete("count") is False
        assert other.get_many(["k", "count"]) == [b"theirs", None]
        assert kv.delete("k") is True
        assert other.get("k") == b"theirs"
        kv.set_many({"x": b"1", "y": b"2"})
        assert kv.clear() == 3  # x, y and count: only this store's keys
        assert other.get("k") == b"theirs"
        assert kv.get_many(["x", "y", "count"]) == [None, None, None]

    def test_clear_handles_glob_characters(self, kv: KeyValueStore) -> None:
        kv.set_many({"a*": b"1", "[b]": b"2", "c?": b"3"})
        assert kv.clear() == 3
        assert kv.get_many(["a*", "[b]", "c?"]) == [None, None, None]

    # -- bad input and lifecycle ----------------------------------------------

    @pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf, True, "5"])
    def test_bad_ttl(self, kv: KeyValueStore, ttl: Any) -> None:
        with pytest.raises(InvalidInputError, match="ttl"):
            kv.set("k", b"v", ttl=ttl)
        with pytest.raises(InvalidInputError, match="ttl"):
            kv.incr("k", ttl=ttl)
        assert kv.get("k") is None

    def test_bad_keys_values_amounts(self, kv: KeyValueStore) -> None:
        with pytest.raises(InvalidInputError, match="keys are str"):
            kv.set(b"k", b"v")  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="keys are str"):
            kv.get_many(["ok", 3])  # type: ignore[list-item]
        with pytest.raises(InvalidInputError, match="values are bytes"):
            kv.set("k", "text")  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="amount"):
            kv.incr("k", 1.5)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="amount"):
            kv.incr("k", True)

    def test_ping_and_close(self, kv_url: str) -> None:
        store = CACHE.open(kv_url)
        store.ping()
        store.close()
        store.close()  # idempotent
        with pytest.raises(ClosedError):
            store.get("k")
        with pytest.raises(ClosedError):
            store.ping()

    def test_empty_prefix_is_refused(self, kv_url: str) -> None:
        with pytest.raises(InvalidInputError, match="prefix"):
            CACHE.open(with_prefix(kv_url, ""))
