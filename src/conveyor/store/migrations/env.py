"""Alembic environment for the metadata store.

Migrations run from code only (:func:`conveyor.store.migrate.upgrade`),
which hands over an open connection, already inside the transaction that
holds the migration lock, and the version table, through
``config.attributes``. There is no offline (SQL script) mode: the store
is always migrated against the live database it serves.
"""

from __future__ import annotations

from alembic import context

from conveyor.store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the metadata store's migrations run from code: use "
        "conveyor.store.MetadataStore.from_url(url) or MetadataStore.migrate()"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=config.attributes["version_table"],
    # SQLite cannot ALTER most things in place; batch mode rebuilds the table.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
