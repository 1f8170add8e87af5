"""The backend matrix itself: each set opens the backends it names, each place is isolated
and removed afterwards, and the markers follow the backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from conveyor.backends import BackendURL
from conveyor.project import Project, init_project
from conveyor.testing import matrix
from conveyor.testing.matrix import BACKEND_SETS, backend_env, only, params
from conveyor.testing.services import NATS_URL, POSTGRES_URL, REDIS_URL, on_nats

#: The class each backend of each seam opens as.
_CLASSES = {
    ("store", "sqlite"): "MetadataStore",
    ("store", "postgresql"): "MetadataStore",
    ("cache", "memory"): "MemoryKV",
    ("cache", "redis"): "RedisKV",
    ("ratelimit", "memory"): "MemoryRateLimiter",
    ("ratelimit", "redis"): "RedisRateLimiter",
    ("events", "sqlite"): "SqlEventLog",
    ("events", "postgresql"): "SqlEventLog",
    ("events", "nats"): "NatsEventLog",
    ("events", "redis"): "RedisStreamEventLog",
}


def test_a_project_on_each_set_opens_the_backends_the_set_names(
    backend_set: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    chosen = BACKEND_SETS[request.node.callspec.params["backend_set"]]
    init_project(tmp_path / "p", name="matrix")
    with Project.open(tmp_path / "p", env=backend_set) as project:
        for seam, kind in chosen.seams().items():
            assert matrix.kind_of(backend_set, seam) == kind
            assert type(project.backend(seam)).__name__ == _CLASSES[seam, kind], seam
        assert project.store.engine.dialect.name == chosen.store
        event = project.events.emit("matrix.checked", durable=True)
        assert project.events.latest(1) == [event]
        project.cache.set("k", b"v")
        assert project.cache.get("k") == b"v"
    for mark in chosen.marks():
        assert request.node.get_closest_marker(mark.name) is not None


def _schema_exists(url: str) -> bool:
    schema = BackendURL.parse(url).query["options"].split("search_path=", 1)[1]
    dsn = BackendURL.parse(POSTGRES_URL).render(hide_password=False)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (schema,)
        ).fetchone()
    return bool(row and row[0])


def _redis_keys(pattern: str) -> list[Any]:
    with redis.Redis.from_url(REDIS_URL) as client:
        return list(client.scan_iter(match=pattern, count=1000))


def _nats_streams() -> set[str]:
    async def names(js: Any) -> set[str]:
        return {info.config.name for info in await js.streams_info()}

    found: set[str] = on_nats(names, NATS_URL)
    return found


@pytest.mark.parametrize(
    "name", params("backend_set", ["postgres-redis", "postgres-nats", "sqlite-redis-streams"])
)
def test_every_place_is_fresh_and_removed_afterwards(name: str, tmp_path: Path) -> None:
    """Two projects on the same set never meet; leaving the set removes what it wrote."""
    with backend_env(name, tmp_path / "1") as env, backend_env(name, tmp_path / "2") as other:
        # memory:// holds nothing outside the object opened on it
        assert not (set(env.values()) & set(other.values())) - {"memory://"}
        init_project(tmp_path / "p", name="places")
        with Project.open(tmp_path / "p", env=env) as project:
            project.store.runs.start("train", "m")
            project.events.emit("place.used", durable=True)
            project.cache.set("k", b"v")
            project.backend("ratelimit").take("key", 1.0, 1)
        with Project.open(tmp_path / "p", env=other) as project:
            assert project.events.count() == 0  # the other project's place is its own
            assert project.cache.get("k") is None
    for used in (env, other):
        for seam, url in used.items():
            parsed = BackendURL.parse(url)
            if parsed.scheme == "postgresql":
                assert not _schema_exists(url), seam
            elif parsed.scheme == "redis" and "prefix" in parsed.query:
                assert _redis_keys(parsed.query["prefix"].rstrip(":") + "*") == [], seam
            elif parsed.scheme == "redis":
                assert _redis_keys(parsed.query["stream"] + "*") == [], seam
            elif parsed.scheme == "nats":
                assert parsed.path.strip("/") not in _nats_streams(), seam


def test_params_carry_the_markers_of_their_services() -> None:
    marks = {p.values[0]: {m.name for m in p.marks} for p in params("events_url")}
    assert marks == {
        "sqlite": set(),
        "postgresql": {"postgres"},
        "nats": {"nats"},
        "redis": {"redis"},
    }
    sets = {p.values[0]: {m.name for m in p.marks} for p in params("backend_set")}
    assert sets["embedded"] == set()
    assert sets["postgres-nats"] == {"postgres", "nats", "redis"}
    with pytest.raises(ValueError, match="sqlite, postgresql"):
        only("store_url", "mysql")
    with pytest.raises(ValueError, match="not a fixture of the backend matrix"):
        params("artifacts_url")


def test_a_test_using_a_service_place_directly_carries_its_marker(
    pg_url: str, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("postgres") is not None


@only("events_url", "nats", "redis")
def test_only_narrows_a_fixture_and_keeps_the_markers(
    events_url: str, request: pytest.FixtureRequest
) -> None:
    kind = request.node.callspec.params["events_url"]
    assert kind in ("nats", "redis") and events_url.startswith(f"{kind}://")
    assert request.node.get_closest_marker(matrix.MARKS[kind]) is not None
