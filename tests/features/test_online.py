"""The online feature store on memory, SQLite and the real Redis key-value backends."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conveyor.backends import CACHE, BackendURL
from conveyor.errors import BackendUnavailableError, InvalidInputError
from conveyor.features.online import GRACE, FeatureRef, OnlineStore, entity_key
from conveyor.kv import KeyValueStore, Versioned
from conveyor.testing.matrix import place
from conveyor.testing.services import REDIS_URL, redis_prefix, require
from conveyor.testing.tcp_proxy import TcpProxy

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)],
)
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValueStore]:
    """A key-value store under a prefix only this test uses, emptied afterwards."""
    if request.param == "sqlite":
        with CACHE.open(f"sqlite:///{tmp_path}/online.db?prefix=t:") as store:
            yield store
        return
    with place("cache", request.param, tmp_path) as url, CACHE.open(url) as store:
        try:
            yield store
        finally:
            store.clear()


@pytest.fixture
def store(kv: KeyValueStore) -> OnlineStore:
    return OnlineStore(kv)


def _now() -> datetime:
    # Whole milliseconds: what every backend and Arrow keep exactly.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _push(
    store: OnlineStore,
    rows: list[dict[str, Any]],
    *,
    view: str = "spend",
    features: Sequence[str] = ("amount",),
    ttl: timedelta | None = DAY,
    **options: Any,
) -> Any:
    return store.write(
        view,
        rows,
        join_keys=["customer_id"],
        event_time="ts",
        features=features,
        ttl=ttl,
        **options,
    )


def _refs(*features: str, view: str = "spend", ttl: timedelta | None = DAY) -> list[FeatureRef]:
    return [FeatureRef(view, f, ("customer_id",), ttl) for f in features]


def _amount(store: OnlineStore, customer: Any = 1, **options: Any) -> Any:
    return store.read([{"customer_id": customer}], _refs("amount"), **options).values[0][0]


# -- latest wins ----------------------------------------------------------------


def test_latest_event_time_wins_whatever_the_arrival_order(store: OnlineStore) -> None:
    t = _now()
    assert _push(store, [{"customer_id": 1, "ts": t - HOUR, "amount": 2.0}]).written == 1
    late = _push(store, [{"customer_id": 1, "ts": t - 2 * HOUR, "amount": 1.0}])
    assert (late.written, late.kept) == (0, 1)  # arrived late, older: not stored
    assert _amount(store) == 2.0
    _push(store, [{"customer_id": 1, "ts": t, "amount": 3.0}])
    assert _amount(store) == 3.0
    # Out of order inside one batch too, and per entity.
    batch = [
        {"customer_id": 2, "ts": t, "amount": 20.0},
        {"customer_id": 2, "ts": t - HOUR, "amount": 10.0},
        {"customer_id": 3, "ts": t - HOUR, "amount": 30.0},
        {"customer_id": 1, "ts": t - DAY / 2, "amount": 99.0},
    ]
    written = _push(store, batch)
    assert (written.rows, written.keys, written.written, written.kept) == (4, 3, 2, 1)
    result = store.read([{"customer_id": c} for c in (1, 2, 3)], _refs("amount"))
    assert result.values == [[3.0], [20.0], [30.0]]
    assert [times[0] for times in result.event_times] == [t, t, t - HOUR]


def test_created_time_breaks_event_time_ties(store: OnlineStore) -> None:
    t = _now()

    def push(created: datetime, amount: float) -> Any:
        row = {"customer_id": 1, "ts": t, "created": created, "amount": amount}
        return _push(store, [row], created_time="created")

    push(t, 1.0)
    assert push(t - HOUR, 0.5).written == 0  # same event time, created earlier: kept out
    assert _amount(store) == 1.0
    assert push(t, 1.5).written == 1  # both equal: the write lands (a re-push)
    assert push(t + HOUR, 2.0).written == 1
    assert _amount(store) == 2.0
    # Without a created-time column, the moment of the write breaks the tie: last wins.
    _push(store, [{"customer_id": 5, "ts": t, "amount": 1.0}])
    _push(store, [{"customer_id": 5, "ts": t, "amount": 2.0}])
    assert _amount(store, 5) == 2.0


def test_concurrent_writers_never_undo_a_newer_row(store: OnlineStore) -> None:
    import random
    import threading

    t = _now()
    hours = list(range(40))
    errors: list[BaseException] = []

    def writer() -> None:
        order = hours[:]
        random.shuffle(order)
        try:
            for h in order:
                _push(store, [{"customer_id": 1, "ts": t - h * HOUR / 10, "amount": float(h)}])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _amount(store) == 0.0  # h = 0 is the latest event time


# -- TTL ------------------------------------------------------------------------


def test_ttl_edges_read_as_expired(store: OnlineStore) -> None:
    t = _now()
    _push(store, [{"customer_id": 1, "ts": t, "amount": 5.0}], ttl=HOUR)
    refs = _refs("amount", ttl=HOUR)
    at_edge = store.read([{"customer_id": 1}], refs, now=t + HOUR)
    assert (at_edge.values, at_edge.statuses) == ([[5.0]], [["present"]])
    past = store.read([{"customer_id": 1}], refs, now=t + HOUR + timedelta(microseconds=1))
    assert past.values == [[None]]
    assert past.statuses == [["expired"]]
    assert past.event_times == [[t]]  # says when the value was from
    assert past.to_dicts(metadata=True) == [
        {
            "customer_id": 1,
            "amount": None,
            "amount__status": "expired",
            "amount__event_time": t,
        }
    ]
    # A view without a TTL never expires; an event time after `now` reads as present.
    _push(store, [{"customer_id": 2, "ts": t - 1000 * DAY, "amount": 7.0}], ttl=None)
    forever = store.read([{"customer_id": 2}], _refs("amount", ttl=None), now=t)
    assert forever.statuses == [["present"]]
    assert store.read([{"customer_id": 1}], refs, now=t - DAY).statuses == [["present"]]


def test_a_row_already_expired_is_not_written(store: OnlineStore) -> None:
    t = _now()
    result = _push(store, [{"customer_id": 1, "ts": t - 2 * HOUR, "amount": 1.0}], ttl=HOUR)
    assert (result.written, result.expired) == (0, 1)
    assert store.read([{"customer_id": 1}], _refs("amount", ttl=HOUR)).statuses == [["missing"]]


@pytest.mark.redis
def test_the_backend_ttl_is_what_is_left_of_the_row_s_life() -> None:
    with redis_prefix() as url, CACHE.open(url) as kv, _raw_redis() as raw:
        t = _now()
        OnlineStore(kv).write(
            "spend",
            [{"customer_id": 1, "ts": t - HOUR, "amount": 1.0}],
            join_keys=["customer_id"],
            event_time="ts",
            features=["amount"],
            ttl=3 * HOUR,
        )
        left_ms = raw.pttl(kv.prefix + entity_key("spend", ["customer_id"], {"customer_id": 1}))
        expected_ms = (2 * HOUR + GRACE).total_seconds() * 1000
        assert expected_ms - 60_000 < left_ms <= expected_ms


# -- reads ----------------------------------------------------------------------


def test_entities_with_no_value_read_as_missing(store: OnlineStore) -> None:
    t = _now()
    _push(store, [{"customer_id": 1, "ts": t, "amount": 1.0}])
    refs = [*_refs("amount"), *_refs("visits", view="web")]
    result = store.read([{"customer_id": 1}, {"customer_id": 404}], refs)
    assert result.values == [[1.0, None], [None, None]]
    assert result.statuses == [["present", "missing"], ["missing", "missing"]]
    assert result.event_times == [[t, None], [None, None]]
    # A feature the stored record does not have (the view gained it later) is missing too.
    assert store.read([{"customer_id": 1}], _refs("new_feature")).statuses == [["missing"]]


def test_many_entities_and_views_in_one_read(store: OnlineStore) -> None:
    t = _now()
    n = 300
    _push(
        store,
        [{"customer_id": i, "ts": t, "amount": float(i), "n": i} for i in range(n)],
        features=["amount", "n"],
    )
    _push(
        store,
        [{"customer_id": i, "ts": t, "visits": i * 10} for i in range(0, n, 2)],
        view="web",
        features=["visits"],
    )
    entities = [{"customer_id": i} for i in range(n + 5)]
    result = store.read(entities, [*_refs("amount", "n"), *_refs("visits", view="web")])
    assert len(result) == n + 5
    for i, row in enumerate(result.to_dicts()):
        if i < n:
            assert row == {
                "customer_id": i,
                "amount": float(i),
                "n": i,
                "visits": i * 10 if i % 2 == 0 else None,
            }
        else:
            assert row == {"customer_id": i, "amount": None, "n": None, "visits": None}
    table = result.to_table(metadata=True)
    assert table.num_rows == n + 5
    assert table.column("n").type == "int64"
    assert table.column("amount").type == "double"
    assert table.column("visits__status").to_pylist()[:3] == ["present", "missing", "present"]


def test_an_arrow_table_in_and_out(store: OnlineStore) -> None:
    import pyarrow as pa

    t = _now()
    rows = pa.table(
        {
            "customer_id": pa.array([1, 2], pa.int64()),
            "ts": pa.array([t, t], pa.timestamp("us", "UTC")),
            "amount": pa.array([1.5, None], pa.float64()),
        }
    )
    _push(store, rows)
    result = store.read(pa.table({"customer_id": [2, 1]}), _refs("amount"))
    assert result.to_table().to_pylist() == [
        {"customer_id": 2, "amount": None},
        {"customer_id": 1, "amount": 1.5},
    ]
    assert result.statuses == [["present"], ["present"]]  # a null value that is there


def test_values_keep_their_types(store: OnlineStore) -> None:
    import math

    t = _now()
    values: dict[str, Any] = {
        "i": 3,
        "big": 2**62,
        "f": 3.0,
        "s": "three",
        "empty": "",
        "b": False,
        "none": None,
        "ts": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        "naive": datetime(2024, 5, 6, 7, 8, 9),
        "d": date(2024, 5, 6),
        "raw": b"\x00\xff",
        "nan": math.nan,
        "inf": -math.inf,
        "vector": [0.5, 1, None, "x"],
    }
    store.write(
        "typed",
        [{"customer_id": 1, "event": t, **values}],
        join_keys=["customer_id"],
        event_time="event",
        features=list(values),
    )
    got = store.read([{"customer_id": 1}], _refs(*values, view="typed")).to_dicts()[0]
    for name, value in values.items():
        if name == "nan":
            assert math.isnan(got[name])
        else:
            assert got[name] == value and type(got[name]) is type(value), name
    assert got["ts"].tzinfo is not None and got["naive"].tzinfo is None


def test_columns_named_twice_need_full_names(store: OnlineStore) -> None:
    t = _now()
    _push(store, [{"customer_id": 1, "ts": t, "amount": 1.0}])
    _push(store, [{"customer_id": 1, "ts": t, "amount": 2.0}], view="refunds")
    refs = [*_refs("amount"), *_refs("amount", view="refunds")]
    with pytest.raises(InvalidInputError, match="full_names"):
        store.read([{"customer_id": 1}], refs)
    result = store.read([{"customer_id": 1}], refs, full_names=True)
    assert result.to_dicts() == [{"customer_id": 1, "spend__amount": 1.0, "refunds__amount": 2.0}]


class _Calls:
    """A key-value store that forwards every call to the real one and counts them."""

    def __init__(self, inner: KeyValueStore) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self.inner, name)


def test_one_read_is_one_round_trip(store: OnlineStore, kv: KeyValueStore) -> None:
    t = _now()
    for view in ("a", "b", "c"):
        _push(store, [{"customer_id": i, "ts": t, "amount": 1.0} for i in range(50)], view=view)
    counted = _Calls(kv)
    refs = [r for view in ("a", "b", "c") for r in _refs("amount", view=view)]
    entities = [{"customer_id": i} for i in range(60)]
    before = _redis_calls(kv)
    result = OnlineStore(counted).read(entities, refs, full_names=True)  # type: ignore[arg-type]
    after = _redis_calls(kv)
    assert counted.calls == ["get_many"]
    assert sum(s == "present" for row in result.statuses for s in row) == 150
    if before is not None and after is not None:
        # On Redis: the 180 keys went in MGET, never one GET per key. (The server is shared
        # with other tests, so other clients' commands may add to the counts, never remove.)
        assert after.get("mget", 0) - before.get("mget", 0) >= 1
        assert after.get("get", 0) - before.get("get", 0) < 180


def _redis_calls(kv: KeyValueStore) -> dict[str, int] | None:
    if BackendURL.parse(str(getattr(kv, "url", ""))).scheme != "redis":
        return None
    with _raw_redis() as raw:
        stats = raw.info("commandstats")
    return {name.removeprefix("cmdstat_"): s["calls"] for name, s in stats.items()}


# -- keys -----------------------------------------------------------------------


def test_key_values_never_collide(store: OnlineStore) -> None:
    t = _now()
    tricky = ["a", "a}", "a}:b", "a:b", "a%7D", "a%257D", "a&b=c", "{a}", "a b", "ünï", ""]
    _push(
        store,
        [{"customer_id": k, "ts": t, "amount": float(i)} for i, k in enumerate(tricky)],
    )
    result = store.read([{"customer_id": k} for k in tricky], _refs("amount"))
    assert [row[0] for row in result.values] == [float(i) for i in range(len(tricky))]
    keys = {entity_key("spend", ["customer_id"], {"customer_id": k}) for k in tricky}
    assert len(keys) == len(tricky)
    for key in keys:  # exactly one hash tag, closed before the view
        assert key.count("{") == 1 and key.count("}") == 1 and key.endswith("}:spend")
    # Composite keys: names are in the key, in name order.
    assert entity_key("v", ["b", "a"], {"a": 1, "b": "x y"}) == "f:{a=1&b=x%20y}:v"
    assert entity_key("v", ["a"], {"a": "1&b=2"}) != entity_key("v", ["a", "b"], {"a": 1, "b": 2})
    # An int and the str of its digits are one entity.
    _push(store, [{"customer_id": 42, "ts": t, "amount": 4.2}])
    assert _amount(store, "42") == 4.2
    # A view name that encoding changes (spend@aggregates) is read where it was written.
    store.write(
        "spend@aggregates",
        [{"customer_id": 7, "ts": t, "amount": 7.5}],
        join_keys=["customer_id"],
        event_time="ts",
        features=["amount"],
    )
    read = store.read([{"customer_id": 7}], [("spend@aggregates", "amount", ("customer_id",))])
    assert read.values == [[7.5]] and read.statuses == [["present"]]


@pytest.mark.parametrize("bad", [1.5, True, None, ("t",)])
def test_bad_join_key_values_are_refused(store: OnlineStore, bad: Any) -> None:
    with pytest.raises(InvalidInputError, match="customer_id") as info:
        _push(store, [{"customer_id": bad, "ts": _now(), "amount": 1.0}])
    assert info.value.context["field"] == "customer_id"
    with pytest.raises(InvalidInputError, match="customer_id"):
        store.read([{"customer_id": bad}], _refs("amount"))
    with pytest.raises(InvalidInputError, match="customer_id"):
        store.read([{"id": 1}], _refs("amount"))


# -- refusals -------------------------------------------------------------------


def test_a_wrong_type_refuses_the_whole_push(store: OnlineStore) -> None:
    t = _now()
    rows = [
        {"customer_id": 1, "ts": t, "amount": 1.0, "n": 1},
        {"customer_id": 2, "ts": t, "amount": 2, "n": 2},  # an int is a fine double
        {"customer_id": 3, "ts": t, "amount": "3.0", "n": 3},
    ]
    types = {"amount": "double", "n": "int64"}
    with pytest.raises(InvalidInputError, match=r"row 2: feature 'amount' is declared float"):
        _push(store, rows, features=["amount", "n"], types=types)
    assert store.read([{"customer_id": i} for i in (1, 2, 3)], _refs("amount")).values == [
        [None],
        [None],
        [None],
    ]
    rows[2]["amount"] = 3.0
    rows[0]["n"] = 1.0  # a float where an int64 is declared
    with pytest.raises(InvalidInputError, match="'n'") as info:
        _push(store, rows, features=["amount", "n"], types=types)
    assert info.value.context["field"] == "n"
    rows[0]["n"] = 1
    _push(store, rows, features=["amount", "n"], types=types)
    got = store.read([{"customer_id": 2}], _refs("amount")).values[0][0]
    assert got == 2.0 and isinstance(got, float)  # stored as the declared type


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"customer_id": 1, "ts": None, "amount": 1.0}, "ts"),
        ({"customer_id": 1, "ts": "2024-01-01", "amount": 1.0}, "ts"),
        ({"customer_id": 1, "ts": "now"}, "amount"),  # no feature column
        ({"customer_id": 1, "ts": datetime.now(UTC), "amount": object()}, "amount"),
        ({"customer_id": 1, "ts": datetime.now(UTC), "amount": 2**70}, "amount"),
    ],
)
def test_bad_rows_are_refused_naming_the_field(
    store: OnlineStore, row: dict[str, Any], field: str
) -> None:
    if row["ts"] == "now":
        row = {**row, "ts": _now()}
    with pytest.raises(InvalidInputError) as info:
        _push(store, [{"customer_id": 9, "ts": _now(), "amount": 9.0}, row])
    assert info.value.context["field"] == field
    assert _amount(store, 9) is None  # the good row before it was not written either


def test_unknown_type_names_are_refused(store: OnlineStore) -> None:
    with pytest.raises(InvalidInputError, match="known"):
        _push(store, [{"customer_id": 1, "ts": _now(), "amount": 1.0}], types={"amount": "dbl"})
    # Type names the spec uses are known.
    _push(
        store,
        [{"customer_id": 1, "ts": _now(), "amount": [1.0, 2]}],
        types={"amount": "list<double>"},
    )
    assert _amount(store) == [1.0, 2.0]


# -- outages --------------------------------------------------------------------


@pytest.mark.redis
def test_a_redis_outage_raises_never_an_empty_vector() -> None:
    with redis_prefix() as url:
        parsed = BackendURL.parse(url)
        require(parsed.host or "127.0.0.1", parsed.port or 6379, "Redis")
        with TcpProxy(parsed.host or "127.0.0.1", parsed.port or 6379) as proxy:
            through = parsed.with_(host="127.0.0.1", port=proxy.port).render(hide_password=False)
            with CACHE.open(through) as kv:
                store = OnlineStore(kv)
                t = _now()
                _push(store, [{"customer_id": 1, "ts": t, "amount": 1.0}])
                assert _amount(store) == 1.0
                proxy.refuse()
                with pytest.raises(BackendUnavailableError):
                    _amount(store)
                with pytest.raises(BackendUnavailableError):
                    _push(store, [{"customer_id": 1, "ts": t, "amount": 2.0}])
                proxy.restore()
                assert _amount(store) == 1.0


def test_the_kv_protocol_carries_the_compare_and_set(kv: KeyValueStore) -> None:
    assert isinstance(kv, KeyValueStore)
    assert kv.set_many_if_newer({"x": Versioned(b"1", (1, 0))}) == 1


def _raw_redis() -> Any:
    import redis

    url = BackendURL.parse(REDIS_URL)
    require(url.host or "127.0.0.1", url.port or 6379, "Redis")
    return redis.Redis.from_url(url.with_(query={}).render(hide_password=False))
