"""Real services for tests: where they are, and isolated places inside them.

Tests run against the real PostgreSQL, Redis and NATS (JetStream) on 127.0.0.1
(the CI and development machines run them). A backend test never skips
silently: if the service is down, :func:`require` fails the test with the
command that starts it.

Each place is a context manager that yields a URL nobody else uses and removes
what was written there on exit: :func:`postgres_schema` (a schema),
:func:`redis_prefix` (a key prefix), :func:`redis_stream` (a stream key) and
:func:`nats_stream` (a JetStream stream). :mod:`conveyor.testing.matrix` builds
the test suite's backends from them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "NATS_URL",
    "POSTGRES_URL",
    "REDIS_URL",
    "nats_stream",
    "on_nats",
    "postgres_schema",
    "redis_prefix",
    "redis_stream",
    "require",
]

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


def _redis_client(base_url: str) -> Any:
    import redis

    from conveyor.backends import BackendURL

    url = BackendURL.parse(base_url)
    require(url.host or "127.0.0.1", url.port or 6379, "Redis")
    return redis.Redis.from_url(url.with_(query={}).render(hide_password=False))


@contextmanager
def redis_prefix(base_url: str = REDIS_URL) -> Iterator[str]:
    """A URL of the test Redis database with a fresh ``?prefix=``; its keys are deleted after.

    Keys that merely start with the prefix's name (a store's ``-other:``
    neighbour) are deleted too.
    """
    from conveyor.backends import BackendURL

    name = f"cvtest-{uuid.uuid4().hex[:12]}"
    client = _redis_client(base_url)
    try:
        url = BackendURL.parse(base_url)
        yield url.with_(query={**url.query, "prefix": f"{name}:"}).render(hide_password=False)
    finally:
        try:
            leftovers = list(client.scan_iter(match=f"{name}*", count=1000))
            if leftovers:
                client.delete(*leftovers)
        finally:
            client.close()


@contextmanager
def redis_stream(base_url: str = REDIS_URL) -> Iterator[str]:
    """A URL naming a Redis stream key nobody else uses; the stream and its id hash go after."""
    from conveyor.backends import BackendURL

    stream = f"cvtest:{uuid.uuid4().hex[:12]}:events"
    client = _redis_client(base_url)
    try:
        url = BackendURL.parse(base_url)
        yield url.with_(query={**url.query, "stream": stream}).render(hide_password=False)
    finally:
        try:
            client.delete(stream, f"{stream}:ids")
        finally:
            client.close()


def on_nats(work: Callable[[Any], Awaitable[Any]], base_url: str = NATS_URL) -> Any:
    """Run ``work(jetstream)`` on a connection of its own (the caller's, not a log's)."""
    import asyncio

    import nats

    async def run() -> Any:
        nc = await nats.connect(base_url)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(run())


@contextmanager
def nats_stream(base_url: str = NATS_URL) -> Iterator[str]:
    """A URL naming a JetStream stream (and subject prefix) nobody else uses; dropped after."""
    import contextlib

    import nats.js.errors

    from conveyor.backends import BackendURL

    url = BackendURL.parse(base_url)
    require(url.host or "127.0.0.1", url.port or 4222, "NATS")
    name = f"cvtest_{uuid.uuid4().hex[:12]}"
    try:
        yield url.with_(path=f"/{name}", query={"subject_prefix": f"cvtest.{name}"}).render(
            hide_password=False
        )
    finally:

        async def drop(js: Any) -> None:
            with contextlib.suppress(nats.js.errors.NotFoundError):  # never opened
                await js.delete_stream(name)

        on_nats(drop, base_url)
