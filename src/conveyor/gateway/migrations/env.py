"""Alembic environment of this migration chain: run from code only (conveyor.store.migrate)."""

from conveyor.store.migrate import run_environment

run_environment()
