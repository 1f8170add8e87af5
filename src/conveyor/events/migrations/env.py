"""Alembic environment for the event log, run from code by ``store.migrate.upgrade``.

The caller hands over an open connection (already holding the migration
lock) and the version table in ``config.attributes``; there is no
``alembic.ini`` and no URL here.
"""

from __future__ import annotations

from alembic import context

from conveyor.events.table import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the event log migrations run from code: "
        "conveyor.store.migrate.upgrade(engine, 'conveyor.events:migrations', "
        "'conveyor_events_version')"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=config.attributes["version_table"],
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
