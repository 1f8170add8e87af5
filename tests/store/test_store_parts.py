"""The store's building blocks: JSON and time validation, lazy imports, shipped migrations."""

from __future__ import annotations

import importlib.resources
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import conveyor.store
from conveyor.errors import InvalidInputError
from conveyor.store.database import MetadataStore
from conveyor.store.paging import Page, encode_cursor
from conveyor.store.types import aware_utc, json_value
from fresh_python import loaded_of


def test_json_value_keeps_plain_json_and_turns_tuples_into_lists() -> None:
    value = {"a": (1, 2.5, None), "b": {"c": [True, "x"]}, "d": 2**70}
    assert json_value(value, "params") == {
        "a": [1, 2.5, None],
        "b": {"c": [True, "x"]},
        "d": 2**70,
    }


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"lr": math.nan}, r"params\.lr"),
        ({"grid": [1.0, math.inf]}, r"params\.grid\[1\]"),
        ({"when": datetime.now(UTC)}, r"params\.when"),
        ({1: "one"}, "key 1"),
        ({"path": Path("/tmp")}, r"params\.path"),
    ],
)
def test_json_value_refuses_what_json_cannot_hold(value: object, path: str) -> None:
    with pytest.raises(InvalidInputError, match=path):
        json_value(value, "params")


def test_json_value_unwraps_numpy_scalars() -> None:
    np = pytest.importorskip("numpy")
    assert json_value({"n": np.int64(3), "x": np.float32(0.5)}, "params") == {"n": 3, "x": 0.5}
    with pytest.raises(InvalidInputError, match=r"params\.x"):
        json_value({"x": np.float64("nan")}, "params")


def test_aware_utc_converts_and_refuses_naive() -> None:
    plus2 = datetime(2026, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert aware_utc(plus2, "t") == datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert aware_utc(plus2, "t").tzinfo == UTC
    with pytest.raises(InvalidInputError, match="aware"):
        aware_utc(datetime(2026, 5, 1), "t")
    with pytest.raises(InvalidInputError, match="t must be a datetime"):
        aware_utc("2026-05-01", "t")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        aware_utc(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), "t")


def test_importing_store_helpers_does_not_load_the_orm() -> None:
    assert (
        loaded_of(("sqlalchemy", "alembic"), "import conveyor.store, conveyor.store.paging") == []
    )


def test_store_package_exports_what_all_names() -> None:
    for name in conveyor.store.__all__:
        assert getattr(conveyor.store, name) is not None
    assert conveyor.store.MetadataStore is MetadataStore
    assert set(conveyor.store.__all__) <= set(dir(conveyor.store))
    with pytest.raises(AttributeError):
        _ = conveyor.store.NoSuchThing


def test_migrations_ship_inside_the_package() -> None:
    from alembic.script import ScriptDirectory

    from conveyor.store.migrate import _config, store_chains

    folder = importlib.resources.files("conveyor.store") / "migrations"
    assert (folder / "script.py.mako").is_file()
    chains = store_chains()
    assert [c.name for c in chains][:1] == ["core"]
    assert len({c.version_table for c in chains}) == len(chains)  # one version table each
    for chain in chains:
        package, _, name = chain.script_location.partition(":")
        assert (importlib.resources.files(package) / name / "env.py").is_file(), chain
        scripts = ScriptDirectory.from_config(_config(chain.script_location, "v"))
        heads = scripts.get_heads()
        assert len(heads) == 1, heads  # one line of history, no branches
        revisions = [r.revision for r in scripts.walk_revisions()]
        assert revisions == sorted(revisions, reverse=True)  # 0002 -> 0001: numbered in order
        assert revisions[-1] == "0001"


def test_any_cursor_gives_a_page_or_invalid_input(sqlite_url: str) -> None:
    with MetadataStore.from_url(sqlite_url) as store:
        store.runs.start("demo", "one")
        moments = st.datetimes(
            min_value=datetime(1, 1, 2),
            max_value=datetime(9999, 12, 30),
            timezones=st.sampled_from([UTC, timezone(timedelta(hours=-11)), None]),
        )
        cursors = st.one_of(
            st.text(),
            st.builds(lambda t, i: encode_cursor(t.isoformat(), i), moments, st.text()),
            st.builds(encode_cursor, st.integers(-(2**63), 2**63 - 1), st.none()),
        )

        @settings(max_examples=300, deadline=None)
        @given(cursors)
        def check(cursor: str) -> None:
            try:
                page = store.runs.list(cursor=cursor)
            except InvalidInputError:
                return
            assert isinstance(page, Page)

        check()


def test_add_artifacts_records_several_in_one_write(sqlite_url: str) -> None:
    with MetadataStore.from_url(sqlite_url) as store:
        run = store.runs.start("train", "m")
        before = store.runs.get(run.id).version
        after = store.runs.add_artifacts(
            run.id, {"a": ("sha256:" + "a" * 64, 1), "b": ("sha256:" + "b" * 64, 2)}
        )
        assert after.artifacts == {
            "a": {"digest": "sha256:" + "a" * 64, "size": 1},
            "b": {"digest": "sha256:" + "b" * 64, "size": 2},
        }
        assert after.version == before + 1  # one transaction, one version bump
