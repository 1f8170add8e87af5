"""Real services for tests: where they are, and isolated places inside them.

Tests run against the real PostgreSQL and Redis on 127.0.0.1 (the CI and
development machines run them). A backend test never skips silently: if the
service is down, :func:`require` fails the test with the command that starts it.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["POSTGRES_URL", "REDIS_URL", "postgres_schema", "require"]

POSTGRES_URL = os.environ.get("CONVEYOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS", "redis://127.0.0.1:6379/15")
NATS_URL = os.environ.get("CONVEYOR_TEST_NATS", "nats://127.0.0.1:4222")

_START = "`make services` (scripts/services.sh) starts it"


def require(host: str, port: int, name: str) -> None:
    """Fail loudly (never skip) when a service the test needs is not listening."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        raise RuntimeError(f"{name} is not reachable on {host}:{port} ({exc}); {_START}") from exc


@contextmanager
def postgres_schema(base_url: str = POSTGRES_URL) -> Iterator[str]:
    """A fresh schema in the test database, dropped afterwards.

    Yields a URL whose connections use that schema (``search_path``), so
    each test sees an empty database without the cost of CREATE DATABASE.
    """
    import psycopg

    from conveyor.backends import BackendURL

    url = BackendURL.parse(base_url)
    require(url.host or "127.0.0.1", url.port or 5432, "PostgreSQL")
    schema = f"cv_{uuid.uuid4().hex[:12]}"
    dsn = url.with_(driver=None).render(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        query = dict(url.query) | {"options": f"-csearch_path={schema}"}
        yield url.with_(query=query).render(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
