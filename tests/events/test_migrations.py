"""The migrated schema is exactly the table metadata, on both backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine

from conveyor.backends import BackendURL
from conveyor.events.sql import MIGRATIONS, VERSION_TABLE
from conveyor.events.table import events, metadata
from conveyor.store.engine import create_engine
from conveyor.store.migrate import current_revision, head_revision, upgrade
from conveyor.testing.matrix import only

# The SQL backends' own migration chain.
pytestmark = only("events_url", "sqlite", "postgresql")


@pytest.fixture
def engine(events_url: str) -> Iterator[Engine]:
    engine = create_engine(BackendURL.parse(events_url), "events")
    try:
        yield engine
    finally:
        engine.dispose()


def _diff(engine: Engine, target: sa.MetaData) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        return list(compare_metadata(ctx, target))


def test_migrated_schema_matches_the_table_metadata(engine: Engine) -> None:
    assert upgrade(engine, MIGRATIONS, VERSION_TABLE) == head_revision(MIGRATIONS)
    assert _diff(engine, metadata) == []
    # The comparison can fail: a table definition that drifted shows up.
    drifted = sa.MetaData()
    events.to_metadata(drifted).append_column(sa.Column("extra", sa.Integer()))
    assert _diff(engine, drifted) != []


def test_upgrade_twice_is_a_no_op_with_its_own_version_table(engine: Engine) -> None:
    first = upgrade(engine, MIGRATIONS, VERSION_TABLE)
    second = upgrade(engine, MIGRATIONS, VERSION_TABLE)
    assert first == second == "0001"
    with engine.connect() as conn:
        assert current_revision(conn, VERSION_TABLE) == "0001"
        # The metadata store's default table is left alone.
        assert not sa.inspect(conn).has_table("alembic_version")
