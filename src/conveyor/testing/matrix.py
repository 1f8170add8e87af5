"""The backend matrix of the test suite: every seam's backends, and named sets of them.

One table says which backends a test runs on; ``tests/conftest.py`` turns it
into fixtures, and a test asks for one to run once per backend:

==================  ==========================================================
``store_url``       ``sqlite`` | ``postgresql``
``kv_url``          ``memory`` | ``redis`` (the cache seam, a key-value store)
``ratelimit_url``   ``memory`` | ``redis``
``events_url``      ``sqlite`` | ``postgresql`` | ``nats`` (JetStream) | ``redis`` (Streams)
``backend_set``     a whole project's backends (:data:`BACKEND_SETS`), as the
                    environment ``Project.open(root, env=...)`` takes
==================  ==========================================================

Every URL is a fresh place that only the test uses (a file in its temporary
folder, a new PostgreSQL schema, a unique Redis key prefix or stream, a new
JetStream stream), removed when the test ends; the services are in
:mod:`conveyor.testing.services`. A backend on a service carries that
service's marker (:data:`MARKS`), here and nowhere else, so ``pytest -m "not
nats"`` runs everything that does not need NATS. A test that uses a single
service's place directly (``pg_url``) gets its marker from
:func:`service_marks`.

A test about particular backends narrows a fixture with :func:`only`::

    @only("events_url", "nats", "redis")
    def test_a_stream_backend_reconnects(events_url: str) -> None: ...

    @only("backend_set", *CORE_SETS)
    def test_a_slow_end_to_end_story(backend_set: dict[str, str]) -> None: ...
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conveyor.testing.services import nats_stream, postgres_schema, redis_prefix, redis_stream

if TYPE_CHECKING:
    from _pytest.mark.structures import ParameterSet

__all__ = [
    "AXES",
    "BACKEND_SETS",
    "CORE_SETS",
    "MARKS",
    "BackendSet",
    "backend_env",
    "kind_of",
    "only",
    "params",
    "place",
    "service_marks",
]

#: Each fixture of the matrix -> the seam its URL is for, and its backends.
AXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "store_url": ("store", ("sqlite", "postgresql")),
    "kv_url": ("cache", ("memory", "redis")),
    "ratelimit_url": ("ratelimit", ("memory", "redis")),
    "events_url": ("events", ("sqlite", "postgresql", "nats", "redis")),
}

#: A backend that runs on a service -> the marker its tests carry (pyproject.toml registers them).
MARKS: dict[str, str] = {
    "postgresql": "postgres",
    "redis": "redis",
    "nats": "nats",
    "mariadb": "mariadb",
}

#: Fixtures that are one service's place: a test using one (directly or through another
#: fixture) carries that service's marker.
SERVICE_FIXTURES: dict[str, str] = {"pg_url": "postgresql", "mariadb_table": "mariadb"}


@dataclass(frozen=True)
class BackendSet:
    """A named combination of a whole project's backends (the seams Conveyor itself has)."""

    name: str
    store: str
    cache: str
    ratelimit: str
    events: str
    description: str = ""

    def seams(self) -> dict[str, str]:
        """Seam -> backend."""
        return {
            "store": self.store,
            "cache": self.cache,
            "ratelimit": self.ratelimit,
            "events": self.events,
        }

    def marks(self) -> list[pytest.MarkDecorator]:
        return _marks(self.seams().values())


#: The combinations a project runs on, by name. Every one of them is a deployment someone
#: would choose; together they put each backend of each seam behind the server at least once.
BACKEND_SETS: dict[str, BackendSet] = {
    s.name: s
    for s in (
        BackendSet("embedded", "sqlite", "memory", "memory", "sqlite", "no service: the defaults"),
        BackendSet(
            "postgres-redis",
            "postgresql",
            "redis",
            "redis",
            "postgresql",
            "one database for the store and the events, Redis for cache and limits",
        ),
        BackendSet(
            "postgres-nats",
            "postgresql",
            "redis",
            "memory",
            "nats",
            "events on JetStream, a shared cache, limits counted per process",
        ),
        BackendSet(
            "sqlite-redis-streams",
            "sqlite",
            "redis",
            "redis",
            "redis",
            "one Redis for the events (Streams), the cache and the limits",
        ),
    )
}

#: The sets on which every end-to-end test runs; a slow one runs on the others only when
#: it says so (``@only("backend_set", *CORE_SETS)`` otherwise).
CORE_SETS: tuple[str, ...] = ("embedded", "postgres-redis")


def _marks(kinds: Iterable[str]) -> list[pytest.MarkDecorator]:
    names = sorted({MARKS[k] for k in kinds if k in MARKS})
    return [getattr(pytest.mark, name) for name in names]


def service_marks(fixturenames: Iterable[str]) -> list[pytest.MarkDecorator]:
    """The markers of the services whose places these fixtures are (``pg_url`` -> postgres)."""
    return _marks(SERVICE_FIXTURES[f] for f in fixturenames if f in SERVICE_FIXTURES)


def _choices(fixture: str) -> tuple[str, ...]:
    if fixture == "backend_set":
        return tuple(BACKEND_SETS)
    if fixture not in AXES:
        known = ", ".join([*AXES, "backend_set"])
        raise ValueError(f"{fixture!r} is not a fixture of the backend matrix ({known})")
    return AXES[fixture][1]


def params(fixture: str, kinds: Iterable[str] | None = None) -> list[ParameterSet]:
    """The fixture's parameters (all its backends, or the named ones), each with its markers."""
    choices = _choices(fixture)
    chosen = tuple(choices if kinds is None else kinds)
    unknown = [k for k in chosen if k not in choices]
    if unknown or not chosen:
        raise ValueError(
            f"{fixture} has the backends {', '.join(choices)}; got {', '.join(chosen) or 'none'}"
        )
    return [
        pytest.param(
            kind,
            id=kind,
            marks=BACKEND_SETS[kind].marks() if fixture == "backend_set" else _marks([kind]),
        )
        for kind in chosen
    ]


def only(fixture: str, *kinds: str) -> pytest.MarkDecorator:
    """Run the test (or class) on these backends of the fixture only."""
    return pytest.mark.parametrize(fixture, params(fixture, kinds), indirect=True)


@contextmanager
def place(seam: str, kind: str, folder: Path) -> Iterator[str]:
    """A URL for ``seam`` on the backend ``kind`` that only the caller uses, removed on exit.

    SQLite files are created in ``folder`` (a test's temporary folder, which pytest removes).
    """
    token = uuid.uuid4().hex[:12]
    if kind == "postgresql":
        with postgres_schema() as url:
            yield url
    elif kind == "sqlite" and seam in ("store", "events"):
        folder.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{folder}/{seam}-{token}.db"
    elif kind == "memory" and seam == "cache":
        # A named space, so two stores opened on the URL share it as on Redis.
        url = f"memory://cvtest-{token}?prefix=cvtest:"
        yield url
        from conveyor.backends import CACHE

        with CACHE.open(url) as store:  # the space outlives its stores: empty it
            store.clear()
    elif kind == "memory" and seam == "ratelimit":
        yield "memory://"  # buckets live in the limiter object: nothing outlives it
    elif kind == "redis" and seam in ("cache", "ratelimit"):
        with redis_prefix() as url:
            yield url
    elif kind == "redis" and seam == "events":
        with redis_stream() as url:
            yield url
    elif kind == "nats" and seam == "events":
        with nats_stream() as url:
            yield url
    else:
        raise ValueError(f"the backend matrix has no {kind!r} backend for the {seam} seam")


@contextmanager
def backend_env(name: str, folder: Path) -> Iterator[dict[str, str]]:
    """The environment of a project on the set ``name``: ``CONVEYOR_<SEAM>`` -> a fresh URL.

    The store and the event log on PostgreSQL share one schema, as they share a
    database in a deployment. Pass the result to ``Project.open(root, env=...)``
    (or merge it into a child process's environment).
    """
    if name not in BACKEND_SETS:
        raise ValueError(f"no backend set {name!r}; sets: {', '.join(BACKEND_SETS)}")
    chosen = BACKEND_SETS[name]
    with ExitStack() as stack:
        env: dict[str, str] = {}
        schema: str | None = None
        for seam, kind in chosen.seams().items():
            if kind == "postgresql":
                if schema is None:
                    schema = stack.enter_context(place(seam, kind, folder))
                url = schema
            else:
                url = stack.enter_context(place(seam, kind, folder))
            env[f"CONVEYOR_{seam.upper()}"] = url
        yield env


def kind_of(env: Mapping[str, str], seam: str) -> str:
    """The backend a set's environment names for ``seam`` (its URL's scheme)."""
    from conveyor.backends import BackendURL

    return BackendURL.parse(env[f"CONVEYOR_{seam.upper()}"]).scheme
