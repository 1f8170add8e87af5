"""Alembic environment of the notes chain: run from code only (conveyor.store.migrate)."""

from conveyor.store.migrate import run_environment

run_environment()
