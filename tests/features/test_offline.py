"""Point-in-time retrieval (conveyor.features.offline) against a brute-force reference.

The reference below reads the rules off the module's docstring and applies them
row by row in plain Python; random frames (seeded, small time domains so that
ties and TTL edges happen often) are compared on every row, for both plans.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conveyor.errors import InvalidInputError
from conveyor.features import offline_plans
from conveyor.features.offline import (
    ViewFrame,
    aggregate_frame,
    get_historical_range,
    get_training_frame,
    window_label,
)
from conveyor.features.offline import _connection as duckdb_connection
from fresh_python import loaded_of

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
SEC = 1_000_000_000


def at(seconds: int | None) -> datetime | None:
    return None if seconds is None else EPOCH + timedelta(seconds=seconds)


def ts_array(seconds: list[int | None], unit: str = "us", tz: str | None = None) -> pa.Array:
    """Instants EPOCH + s, as timestamps of ``unit``; naive ones hold the UTC wall clock."""
    ns = [None if s is None else int(EPOCH.timestamp()) * SEC + s * SEC for s in seconds]
    utc = pa.array(ns, pa.int64()).cast(pa.timestamp("ns", "UTC")).cast(pa.timestamp(unit, "UTC"))
    if tz is None:
        return utc.cast(pa.int64()).cast(pa.timestamp(unit))
    return utc.cast(pa.timestamp(unit, tz))


# -- the reference ---------------------------------------------------------------


@dataclass
class Row:
    key: Any
    ev: int | None
    cr: int | None
    value: Any
    index: int


def reference(
    entity: list[tuple[Any, int | None]],
    rows: list[Row],
    *,
    ttl: int | None,
    as_known_at: bool,
    has_created: bool,
) -> list[Any]:
    out: list[Any] = []
    for key, t in entity:
        if t is None or key is None:
            out.append(None)
            continue
        visible = []
        for r in rows:
            if r.key != key or r.ev is None or r.ev > t:
                continue
            if ttl is not None and not r.ev > t - ttl:
                continue
            if as_known_at and has_created and (r.ev if r.cr is None else r.cr) > t:
                continue
            visible.append(r)
        if not visible:
            out.append(None)
            continue
        best = max(
            visible,
            key=lambda r: (r.ev, r.cr is not None, r.cr if r.cr is not None else 0, r.index),
        )
        out.append(best.value)
    return out


def random_case(rng: random.Random) -> tuple[list[tuple[Any, int | None]], list[Row]]:
    keys = list(range(rng.randint(1, 4)))
    rows = []
    for i in range(rng.randint(0, 40)):
        ev = rng.randint(0, 30) if rng.random() > 0.03 else None
        cr = None
        if ev is not None and rng.random() > 0.15:
            # Mostly on time or late (backfills), sometimes before the event.
            cr = ev + rng.choice([0, 0, 1, 2, 5, 10, 20, -1])
        value = rng.randint(0, 1000) if rng.random() > 0.1 else None
        rows.append(Row(rng.choice(keys), ev, cr, value, i))
    entity: list[tuple[Any, int | None]] = []
    for _ in range(rng.randint(0, 30)):
        key = rng.choice([*keys, 99])  # 99: an entity with no history
        t = rng.randint(-2, 45) if rng.random() > 0.03 else None
        entity.append((key, t))
    if entity and rng.random() < 0.5:
        entity += rng.sample(entity, k=min(3, len(entity)))  # duplicate rows
        rng.shuffle(entity)
    return entity, rows


TIME_TYPES = [
    ("us", None, "ms", "UTC"),
    ("ns", "UTC", "s", None),
    ("s", "Asia/Tokyo", "ns", "America/New_York"),
    ("ms", None, "us", None),
]


def frames(
    entity: list[tuple[Any, int | None]], rows: list[Row], case: int
) -> tuple[pa.Table, pa.Table]:
    e_unit, e_tz, s_unit, s_tz = TIME_TYPES[case % len(TIME_TYPES)]
    ent = pa.table(
        {
            "customer": pa.array([k for k, _ in entity], pa.int64()),
            "event_timestamp": ts_array([t for _, t in entity], e_unit, e_tz),
            "label": pa.array([i % 2 for i in range(len(entity))], pa.int8()),
        }
    )
    src = pa.table(
        {
            "customer": pa.array([r.key for r in rows], pa.int64()),
            "ts": ts_array([r.ev for r in rows], s_unit, s_tz),
            "created": ts_array([r.cr for r in rows], s_unit, s_tz),
            "spend": pa.array([r.value for r in rows], pa.int64()),
        }
    )
    return ent, src


# -- property-style: random frames, every row ------------------------------------


@pytest.mark.parametrize("plan", ["auto", "hash", "asof", "window"])
@pytest.mark.parametrize("seed", range(16))
def test_random_frames_match_the_reference_on_every_row(
    seed: int, plan: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if seed % 2:
        # "auto" then splits the entity rows between the hash and the asof plans.
        monkeypatch.setattr(offline_plans, "HEAVY_KEY_ROWS", 3)
    if seed % 4 >= 2:
        # The hash plan compares rows of (event, created, order) instead of one integer.
        monkeypatch.setattr(offline_plans, "PACK", False)
    rng = random.Random(seed)
    entity, rows = random_case(rng)
    ent, src = frames(entity, rows, seed)
    # One view per TTL and with or without its created column, all in one frame.
    cases = [(ttl, with_created) for ttl in (None, 5, 1) for with_created in (True, False)]
    views = [
        ViewFrame(
            name=f"txn{i}",
            source=src,
            join_keys=("customer",),
            event_time="ts",
            features=("spend",),
            created_time="created" if with_created else None,
            ttl=None if ttl is None else timedelta(seconds=ttl),
        )
        for i, (ttl, with_created) in enumerate(cases)
    ]
    for as_known_at in (True, False):
        got = get_training_frame(ent, views, as_known_at=as_known_at, plan=plan)  # type: ignore[arg-type]
        for i, (ttl, with_created) in enumerate(cases):
            # Without a created column, ties go to the later row: the reference
            # sees no created times at all.
            ref_rows = (
                rows if with_created else [Row(r.key, r.ev, None, r.value, r.index) for r in rows]
            )
            want = reference(
                entity, ref_rows, ttl=ttl, as_known_at=as_known_at, has_created=with_created
            )
            assert got.column(f"txn{i}__spend").to_pylist() == want, (
                ttl,
                as_known_at,
                with_created,
            )
        # The entity frame comes back exactly as given, features appended.
        assert got.select(ent.column_names).equals(ent)
        assert got.column_names == [*ent.column_names, *(f"txn{i}__spend" for i in range(6))]


@pytest.mark.parametrize("seed", range(10))
def test_parquet_sources_split_over_files_match_the_reference(tmp_path: Path, seed: int) -> None:
    rng = random.Random(1000 + seed)
    entity, rows = random_case(rng)
    # Exact duplicates of (key, event, created) with other values: the later row wins.
    rows += [
        Row(r.key, r.ev, r.cr, (r.value or 0) + 1, len(rows) + i) for i, r in enumerate(rows[:3])
    ]
    ent, src = frames(entity, rows, seed)
    half = src.num_rows // 2
    (tmp_path / "src").mkdir()
    # Odd seeds: files without statistics, so the packed order's ranges come from a query.
    stats = seed % 2 == 0
    pq.write_table(src.slice(0, half), tmp_path / "src" / "part-0.parquet", write_statistics=stats)
    pq.write_table(src.slice(half), tmp_path / "src" / "part-1.parquet", write_statistics=stats)
    pq.write_table(ent, tmp_path / "entity.parquet")
    want = reference(entity, rows, ttl=5, as_known_at=True, has_created=True)
    for source in (tmp_path / "src", str(tmp_path / "src" / "*.parquet")):
        view = ViewFrame(
            "txn", source, ("customer",), "ts", ("spend",), "created", timedelta(seconds=5)
        )
        for plan in ("auto", "asof"):
            got = get_training_frame(tmp_path / "entity.parquet", [view], plan=plan)
            assert got.column("txn__spend").to_pylist() == want, plan


def test_heavy_keys_take_the_asof_plan_and_agree_with_the_reference() -> None:
    # Key 0 has far more entity rows than HEAVY_KEY_ROWS; the others one or two each.
    rng = random.Random(77)
    rows = [
        Row(rng.randint(0, 5), rng.randint(0, 60), None, rng.randint(0, 99), i) for i in range(200)
    ]
    rows = [
        Row(r.key, r.ev, (r.ev or 0) + rng.choice([0, 0, 3, 9]), r.value, r.index) for r in rows
    ]
    entity: list[tuple[Any, int | None]] = [(0, rng.randint(0, 70)) for _ in range(60)]
    entity += [(k, rng.randint(0, 70)) for k in (1, 2, 2, 3, 4, 5, 9)]
    rng.shuffle(entity)
    ent, src = frames(entity, rows, 0)
    for ttl in (None, 7):
        view = ViewFrame(
            "txn",
            src,
            ("customer",),
            "ts",
            ("spend",),
            "created",
            None if ttl is None else timedelta(seconds=ttl),
        )
        want = reference(entity, rows, ttl=ttl, as_known_at=True, has_created=True)
        for plan in ("auto", "hash", "asof"):
            got = get_training_frame(ent, [view], plan=plan)
            assert got.column("txn__spend").to_pylist() == want, (plan, ttl)


def test_an_order_too_wide_to_pack_falls_back_to_rows_of_three_values() -> None:
    # Nanosecond times five centuries apart: event and created need 63 bits each.
    far = [-(2**62), 2**62]
    src = pa.table(
        {
            "customer": pa.array([1, 1, 1, 1], pa.int64()),
            "ts": pa.array([far[0], far[0], 10, 10], pa.int64()).cast(pa.timestamp("ns")),
            "created": pa.array([far[0], far[1], 10, 11], pa.int64()).cast(pa.timestamp("ns")),
            "spend": pa.array([1, 2, 3, 4], pa.int64()),
        }
    )
    ent = pa.table(
        {
            "customer": pa.array([1, 1, 1], pa.int64()),
            "event_timestamp": pa.array([far[0], 10, far[1]], pa.int64()).cast(
                pa.timestamp("ns", "UTC")
            ),
        }
    )
    view = ViewFrame("txn", src, ("customer",), "ts", ("spend",), "created")
    with duckdb_connection(None, None) as con:
        source = offline_plans.Source.open(con, view, "s", None)
        times = offline_plans.EntityTimes(far[0], far[1])
        assert offline_plans.packing(view, source, con, times, known_at=False) is None
    # Known at: row 1 at its own time; row 3 at 10 (row 4 only from 11); row 2 wins late on.
    assert spend(ent, view) == [1, 3, 4]
    assert spend(ent, view, as_known_at=False) == [2, 4, 4]


def test_entity_times_near_the_smallest_instant_with_a_long_ttl() -> None:
    # t - ttl is below the smallest 64-bit nanosecond: the TTL test runs in 128 bits.
    early = -(2**63) + 10 * SEC
    src = pa.table(
        {
            "customer": pa.array([1, 1], pa.int64()),
            "ts": pa.array([early, early + 5 * SEC], pa.int64()).cast(pa.timestamp("ns")),
            "spend": pa.array([1, 2], pa.int64()),
        }
    )
    ent = pa.table(
        {
            "customer": pa.array([1, 1], pa.int64()),
            "event_timestamp": pa.array([early + 2 * SEC, early + 9 * SEC], pa.int64()).cast(
                pa.timestamp("ns", "UTC")
            ),
        }
    )
    for ttl in (timedelta(days=365), timedelta(seconds=6)):
        view = ViewFrame("txn", src, ("customer",), "ts", ("spend",), ttl=ttl)
        want = [1, 2]
        for plan in ("auto", "asof", "window"):
            assert spend(ent, view, plan=plan) == want, (plan, ttl)


def test_a_training_frame_from_parquet_imports_no_pandas(tmp_path: Path) -> None:
    import subprocess
    import sys

    pq.write_table(entity_at(30), tmp_path / "entity.parquet")
    pq.write_table(one_view().source, tmp_path / "txn.parquet")
    code = (
        "import sys; from pathlib import Path; from datetime import timedelta\n"
        "from conveyor.features.offline import ViewFrame, get_training_frame\n"
        f"d = Path({str(tmp_path)!r})\n"
        "v = ViewFrame('txn', d / 'txn.parquet', ('customer',), 'ts', ('spend',), 'created',"
        " timedelta(seconds=50))\n"
        "t = get_training_frame(d / 'entity.parquet', [v])\n"
        "print(t.column('txn__spend').to_pylist(), 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # pandas costs a quarter of a second to import: a training frame does not need it.
    assert out.stdout.strip() == "[300] False"


# -- the rules, one at a time ----------------------------------------------------


def one_view(**overrides: Any) -> ViewFrame:
    src = pa.table(
        {
            "customer": pa.array([1, 1, 1], pa.int64()),
            "ts": ts_array([10, 20, 20]),
            "created": ts_array([10, 21, 25]),
            "spend": pa.array([100, 200, 300], pa.int64()),
        }
    )
    fields: dict[str, Any] = {
        "name": "txn",
        "source": src,
        "join_keys": ("customer",),
        "event_time": "ts",
        "features": ("spend",),
        "created_time": "created",
        "ttl": None,
        **overrides,
    }
    return ViewFrame(**fields)


def entity_at(*seconds: int | None, key: int = 1) -> pa.Table:
    return pa.table(
        {
            "customer": pa.array([key] * len(seconds), pa.int64()),
            "event_timestamp": ts_array(list(seconds)),
        }
    )


def spend(entity: pa.Table, view: ViewFrame, **kw: Any) -> list[Any]:
    values: list[Any] = get_training_frame(entity, [view], **kw).column("txn__spend").to_pylist()
    return values


def test_the_event_time_edge_is_inclusive() -> None:
    assert spend(entity_at(9, 10), one_view()) == [None, 100]


def test_the_ttl_edge_is_exclusive_a_value_exactly_ttl_old_has_expired() -> None:
    view = one_view(ttl=timedelta(seconds=5))
    # Row at 10 (known at 10): visible for t in [10, 15); at 15 it is exactly 5 s old.
    assert spend(entity_at(10, 14, 15), view) == [100, 100, None]


def test_a_subsecond_ttl_edge() -> None:
    view = one_view(ttl=timedelta(seconds=4, microseconds=999_999))
    t = pa.array([EPOCH + timedelta(seconds=14, microseconds=999_999)], pa.timestamp("us", "UTC"))
    ent = pa.table({"customer": pa.array([1], pa.int64()), "event_timestamp": t})
    assert spend(ent, view) == [None]
    assert spend(ent, one_view(ttl=timedelta(seconds=5))) == [100]


def test_ties_on_event_time_go_to_the_later_created_time() -> None:
    # Both rows at 20; created 21 and 25.
    assert spend(entity_at(30), one_view()) == [300]
    assert spend(entity_at(30), one_view(), as_known_at=False) == [300]


def test_as_known_at_hides_a_backfill_until_it_was_written() -> None:
    # At 20 neither row of time 20 is known yet; at 21 the first is, at 25 the second.
    assert spend(entity_at(20, 21, 24, 25), one_view()) == [100, 200, 200, 300]
    assert spend(entity_at(20, 21, 24, 25), one_view(), as_known_at=False) == [300] * 4


def test_without_a_created_column_as_known_at_has_no_effect() -> None:
    view = one_view(created_time=None)
    # The later of the two rows at 20 wins.
    assert spend(entity_at(20, 25), view) == spend(entity_at(20, 25), view, as_known_at=False)
    assert spend(entity_at(20), view) == [300]


def test_late_data_with_an_older_event_time_never_replaces_a_newer_value() -> None:
    src = pa.table(
        {
            "customer": pa.array([1, 1], pa.int64()),
            "ts": ts_array([10, 5]),
            "created": ts_array([10, 30]),  # the row of time 5 arrives at 30
            "spend": pa.array([1, 2], pa.int64()),
        }
    )
    view = one_view(source=src)
    assert spend(entity_at(7, 12, 40), view) == [None, 1, 1]
    # Before the newer row existed, the late one is what was known... from 30 on.
    src2 = src.set_column(1, "ts", ts_array([35, 5]))
    assert spend(entity_at(29, 30, 40), one_view(source=src2)) == [None, 2, 1]


def test_entities_without_history_and_duplicate_rows_are_kept_in_order() -> None:
    ent = pa.table(
        {
            "customer": pa.array([7, 1, 1, None, 1], pa.int64()),
            "event_timestamp": ts_array([30, 30, 30, 30, None]),
            "extra": ["a", "b", "c", "d", "e"],
        }
    )
    got = get_training_frame(ent, [one_view()])
    assert got.num_rows == 5
    assert got.column("extra").to_pylist() == ["a", "b", "c", "d", "e"]
    assert got.column("txn__spend").to_pylist() == [None, 300, 300, None, None]


def test_an_empty_entity_frame_and_an_empty_source() -> None:
    got = get_training_frame(entity_at(), [one_view()])
    assert got.num_rows == 0
    assert got.column_names == ["customer", "event_timestamp", "txn__spend"]
    empty = one_view().source.slice(0, 0)  # type: ignore[union-attr]
    assert spend(entity_at(30), one_view(source=empty)) == [None]


def test_tz_aware_and_naive_timestamps_are_the_same_instants() -> None:
    view = one_view(ttl=timedelta(seconds=5))
    # 10 s after EPOCH, as a naive UTC wall clock and as Tokyo/ns, seconds.
    for ent_times in (
        ts_array([10, 15], "ns", None),
        ts_array([10, 15], "s", "Asia/Tokyo"),
        ts_array([10, 15], "ms", "UTC"),
    ):
        ent = pa.table({"customer": pa.array([1, 1], pa.int64()), "event_timestamp": ent_times})
        assert spend(ent, view) == [100, None]
    tokyo = timezone(timedelta(hours=9))
    local = pa.array(
        [datetime(2024, 1, 1, 9, 0, 10, tzinfo=tokyo)], pa.timestamp("us", "Asia/Tokyo")
    )
    ent = pa.table({"customer": pa.array([1], pa.int64()), "event_timestamp": local})
    assert spend(ent, view) == [100]


def test_nanosecond_precision_is_kept() -> None:
    base = int(EPOCH.timestamp()) * SEC + 10 * SEC
    src = pa.table(
        {
            "customer": pa.array([1, 1], pa.int64()),
            "ts": pa.array([base, base + 1], pa.int64()).cast(pa.timestamp("ns")),
            "spend": pa.array([1, 2], pa.int64()),
        }
    )
    ent = pa.table(
        {
            "customer": pa.array([1, 1], pa.int64()),
            "event_timestamp": pa.array([base, base + 1], pa.int64()).cast(
                pa.timestamp("ns", "UTC")
            ),
        }
    )
    view = ViewFrame("txn", src, ("customer",), "ts", ("spend",))
    assert spend(ent, view) == [1, 2]


def test_a_date_entity_time_is_midnight_utc() -> None:
    ent = pa.table(
        {
            "customer": pa.array([1], pa.int64()),
            "event_timestamp": pa.array([EPOCH.date()], pa.date32()),
        }
    )
    src = pa.table(
        {
            "customer": pa.array([1], pa.int64()),
            "ts": pa.array([EPOCH], pa.timestamp("us", "UTC")),
            "spend": [5],
        }
    )
    assert spend(ent, ViewFrame("txn", src, ("customer",), "ts", ("spend",))) == [5]


def test_several_views_composite_keys_names_and_types() -> None:
    ent = pa.table(
        {
            "customer": pa.array([1, 1, 2], pa.int64()),
            "store": ["a", "b", "a"],
            "event_timestamp": ts_array([30, 30, 30]),
        }
    )
    by_pair = pa.table(
        {
            "customer": pa.array([1, 1, 2], pa.int64()),
            "store": ["a", "b", "b"],
            "ts": ts_array([1, 2, 3]),
            "visits": pa.array([1, 2, 3], pa.int32()),
            "last_item": ["x", "y", "z"],
            "score": pa.array([0.5, 1.5, 2.5], pa.float32()),
        }
    )
    views = [
        one_view(),
        ViewFrame("pair", by_pair, ("customer", "store"), "ts", ("visits", "last_item", "score")),
    ]
    got = get_training_frame(ent, views)
    assert got.column_names == [
        "customer",
        "store",
        "event_timestamp",
        "txn__spend",
        "pair__visits",
        "pair__last_item",
        "pair__score",
    ]
    assert got.column("txn__spend").to_pylist() == [300, 300, None]
    assert got.column("pair__visits").to_pylist() == [1, 2, None]
    assert got.column("pair__last_item").to_pylist() == ["x", "y", None]
    # Types come back as the source has them.
    assert got.schema.field("pair__visits").type == pa.int32()
    assert got.schema.field("pair__score").type == pa.float32()
    short = get_training_frame(ent, views, full_names=False)
    assert short.column_names[3:] == ["spend", "visits", "last_item", "score"]


def test_short_names_that_collide_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="spend") as info:
        get_training_frame(entity_at(1), [one_view(), one_view(name="other")], full_names=False)
    assert info.value.context["field"] == "spend"


def test_an_entity_frame_missing_its_time_or_keys_is_refused_naming_them() -> None:
    ent = pa.table({"event_timestamp": ts_array([1])})
    with pytest.raises(InvalidInputError, match="'customer'") as info:
        get_training_frame(ent, [one_view()])
    assert info.value.context["field"] == "customer"
    ent = pa.table({"customer": [1]})
    with pytest.raises(InvalidInputError, match="'when'") as info:
        get_training_frame(ent, [one_view()], entity_time="when")
    assert info.value.context["field"] == "when"
    ent = pa.table({"customer": [1], "event_timestamp": [3]})
    with pytest.raises(InvalidInputError, match="not a timestamp"):
        get_training_frame(ent, [one_view()])


def test_a_source_missing_a_declared_column_is_refused_naming_view_and_column(
    tmp_path: Path,
) -> None:
    view = one_view(features=("spend", "refunds"))
    with pytest.raises(InvalidInputError, match=r"view 'txn'.*'refunds'") as info:
        get_training_frame(entity_at(1), [view])
    assert info.value.context == {"field": "refunds", "view": "txn"}
    pq.write_table(one_view().source, tmp_path / "t.parquet")
    with pytest.raises(InvalidInputError, match="'made'"):
        get_training_frame(
            entity_at(1), [one_view(source=tmp_path / "t.parquet", created_time="made")]
        )
    with pytest.raises(InvalidInputError, match="no Parquet file"):
        get_training_frame(entity_at(1), [one_view(source=tmp_path / "nothing" / "*.parquet")])


def test_spill_dir_and_memory_limit_are_used(tmp_path: Path) -> None:
    got = get_training_frame(
        entity_at(30), [one_view()], spill_dir=tmp_path / "spill", memory_limit="256MB"
    )
    assert got.column("txn__spend").to_pylist() == [300]


# -- historical range ------------------------------------------------------------


def test_historical_range_returns_entities_seen_in_the_range_with_values_at_end() -> None:
    src = pa.table(
        {
            "customer": pa.array([1, 2, 2, 3, 4], pa.int64()),
            "ts": ts_array([5, 12, 18, 30, 15]),
            "created": ts_array([5, 12, 25, 30, 15]),
            "spend": pa.array([10, 20, 21, 30, 40], pa.int64()),
        }
    )
    view = one_view(source=src, ttl=timedelta(seconds=4))
    got = get_historical_range([view], at(10), at(20))  # type: ignore[arg-type]
    # 1 (only at 5) and 3 (at 30) are outside [10, 20]; 4 is seen but has expired at 20;
    # 2's row at 18 is created at 25, after the end: its value at 20 is the one of 12 ... expired.
    assert got.column("customer").to_pylist() == [2, 4]
    assert got.column("txn__spend").to_pylist() == [None, None]
    assert got.column("event_timestamp").to_pylist() == [at(20), at(20)]
    wide = one_view(source=src, ttl=None)
    got = get_historical_range([wide], at(10), at(20))  # type: ignore[arg-type]
    assert got.column("txn__spend").to_pylist() == [20, 40]
    got = get_historical_range([wide], at(10), at(20), as_known_at=False)  # type: ignore[arg-type]
    assert got.column("customer").to_pylist() == [2, 4]
    assert got.column("txn__spend").to_pylist() == [21, 40]
    # Both edges inclusive.
    got = get_historical_range([wide], at(12), at(15))  # type: ignore[arg-type]
    assert got.column("customer").to_pylist() == [2, 4]
    with pytest.raises(InvalidInputError, match="after"):
        get_historical_range([wide], at(20), at(10))  # type: ignore[arg-type]


# -- windowed aggregates ---------------------------------------------------------


def reference_aggregates(
    entity: list[tuple[Any, int | None]],
    rows: list[Row],
    window: int,
    *,
    as_known_at: bool,
    has_created: bool,
) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {f: [] for f in ("sum", "count", "mean", "min", "max")}
    for key, t in entity:
        values = []
        if t is not None and key is not None:
            for r in rows:
                if r.key != key or r.ev is None or not (t - window < r.ev <= t):
                    continue
                if as_known_at and has_created and (r.ev if r.cr is None else r.cr) > t:
                    continue
                if r.value is not None:
                    values.append(r.value)
        out["count"].append(len(values))
        out["sum"].append(sum(values))
        out["mean"].append(sum(values) / len(values) if values else None)
        out["min"].append(min(values) if values else None)
        out["max"].append(max(values) if values else None)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_aggregates_match_a_brute_force_computation(seed: int) -> None:
    rng = random.Random(5000 + seed)
    entity, rows = random_case(rng)
    ent, src = frames(entity, rows, seed)
    windows = (1, 5, 12)
    for as_known_at in (True, False):
        got = aggregate_frame(
            ent,
            src,
            join_keys=("customer",),
            event_time="ts",
            column="spend",
            windows=tuple(timedelta(seconds=w) for w in windows),
            as_known_at=as_known_at,
            created_time="created",
        )
        assert got.num_rows == ent.num_rows
        assert got.select(ent.column_names).equals(ent)
        for w in windows:
            want = reference_aggregates(entity, rows, w, as_known_at=as_known_at, has_created=True)
            for fn, values in want.items():
                column = got.column(f"spend__{fn}__{w}s").to_pylist()
                if fn == "mean":
                    assert column == pytest.approx(values, nan_ok=True), (fn, w)
                else:
                    assert column == values, (fn, w, as_known_at)


def test_aggregate_types_labels_and_refusals() -> None:
    ent = entity_at(30)
    got = aggregate_frame(
        ent,
        one_view().source,
        join_keys=("customer",),
        event_time="ts",
        column="spend",
        windows=(timedelta(hours=1, minutes=30),),
        functions=("sum", "max"),
    )
    assert got.column_names == [
        "customer",
        "event_timestamp",
        "spend__sum__1h30m",
        "spend__max__1h30m",
    ]
    assert got.schema.field("spend__sum__1h30m").type == pa.int64()
    assert got.column("spend__sum__1h30m").to_pylist() == [600]
    with pytest.raises(InvalidInputError, match="median") as info:
        aggregate_frame(
            ent,
            one_view().source,
            join_keys=("customer",),
            event_time="ts",
            column="spend",
            functions=("median",),
        )
    assert info.value.context["field"] == "functions"
    with pytest.raises(InvalidInputError) as info:
        aggregate_frame(
            ent, one_view().source, join_keys=("customer",), event_time="ts", column="amount"
        )
    assert info.value.context["field"] == "amount"


def test_window_labels() -> None:
    assert window_label(timedelta(days=7)) == "7d"
    assert window_label(timedelta(days=1)) == "24h" and window_label(timedelta(days=2)) == "2d"
    assert window_label(timedelta(hours=1, minutes=30)) == "1h30m"
    assert window_label(timedelta(seconds=90)) == "1m30s"
    assert window_label(timedelta(milliseconds=5)) == "5000us"


def test_importing_the_package_imports_neither_duckdb_nor_arrow() -> None:
    code = "import conveyor.features, conveyor.features.offline"
    assert loaded_of(("duckdb", "pyarrow", "numpy"), code) == []
