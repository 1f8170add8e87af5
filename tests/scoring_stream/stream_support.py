"""A project with a small LogisticRegression, and JetStream streams made and dropped per test."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from conveyor.project import Project, init_project
from conveyor.testing.services import NATS_URL, REDIS_URL, require

FEATURES = ["f0", "f1", "f2", "f3"]


def training_frame(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    y = (x["f0"] + x["f1"] - x["f2"] > 0).astype(int).to_numpy()
    return x, y


def make_project(root: Path, versions: int = 1) -> Project:
    """A fresh project at ``root`` with ``lr@1`` (and more versions) registered."""
    from sklearn.linear_model import LogisticRegression

    init_project(root)
    project = Project.open(root)
    for v in range(versions):
        x, y = training_frame(seed=v)
        if v:  # a later version that answers differently (labels flipped)
            y = 1 - y
        project.registry.register("lr", LogisticRegression().fit(x, y), signature_from=x)
    return project


def rows(n: int, *, start: int = 0, seed: int = 1, users: int = 10) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(FEATURES)))
    return [
        {
            "n": start + i,
            "user": f"u{(start + i) % users}",
            **dict(zip(FEATURES, map(float, v), strict=True)),
        }
        for i, v in enumerate(values)
    ]


def predict(project: Project, batch: list[dict[str, Any]], version: int = 1) -> list[int]:
    loaded = project.registry.load(f"lr@{version}")
    frame = pd.DataFrame([{f: r[f] for f in FEATURES} for r in batch])
    return [int(v) for v in loaded.model.predict(frame)]


async def _connect() -> Any:
    import nats

    return await nats.connect(NATS_URL)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@dataclass
class Streams:
    """One test's input stream ``name`` on ``subject.>``, and every target under ``prefix``."""

    name: str
    prefix: str
    kind = "nats"

    def __post_init__(self) -> None:
        self.ids: list[str] = []  # the id of each message published, in order

    @property
    def subject(self) -> str:
        return f"{self.prefix}.in"

    def target(self, role: str) -> str:
        return f"{self.prefix}.{role}"

    def url(self, durable: str = "scorer", **options: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"subject": f"{self.subject}.>", **options}.items())
        return f"{NATS_URL}/{self.name}?durable={durable}&{query}"

    def publish(self, records: list[Any], *, ids: bool = False) -> None:
        async def go() -> None:
            nc = await _connect()
            js = nc.jetstream()
            try:
                for i, r in enumerate(records):
                    body = r if isinstance(r, bytes) else orjson.dumps(r)
                    headers = {"Nats-Msg-Id": f"m{i}"} if ids else None
                    ack = await js.publish(f"{self.subject}.x", body, headers=headers)
                    self.ids.append(f"m{i}" if ids else f"{self.name}:{ack.seq}")
            finally:
                await nc.close()

        run(go())

    def read(self, role: str) -> list[dict[str, Any]]:
        """Every record published to a target (its stream), in order; [] if none."""
        import nats.js.errors

        async def go() -> list[dict[str, Any]]:
            nc = await _connect()
            js = nc.jetstream()
            try:
                try:
                    stream = await js.find_stream_name_by_subject(self.target(role))
                except nats.js.errors.NotFoundError:
                    return []
                info = await js.stream_info(stream)
                if not info.state.messages:
                    return []
                out = []
                for seq in range(info.state.first_seq, info.state.last_seq + 1):
                    with contextlib.suppress(nats.js.errors.NotFoundError):
                        msg = await js.get_msg(stream, seq)
                        out.append(orjson.loads(msg.data))
                return out
            finally:
                await nc.close()

        result: list[dict[str, Any]] = run(go())
        return result

    def captured_target(self) -> str:
        """A target the source itself consumes."""
        return f"{self.subject}.scores"

    def settled(self, durable: str = "scorer") -> tuple[int, int]:
        """(messages the group has not taken, taken and not acked)."""
        info = self.consumer(durable)
        return info.num_pending, info.num_ack_pending

    def consumer(self, durable: str = "scorer") -> Any:
        async def go() -> Any:
            nc = await _connect()
            try:
                return await nc.jetstream().consumer_info(self.name, durable)
            finally:
                await nc.close()

        return run(go())


@contextlib.contextmanager
def nats_streams() -> Iterator[Streams]:
    """An input stream nobody else uses; it and every stream of its targets are dropped after."""
    require("127.0.0.1", 4222, "NATS")
    token = uuid.uuid4().hex[:10]
    streams = Streams(f"cvs_{token}", f"cvs.{token}")

    async def make() -> None:
        nc = await _connect()
        try:
            await nc.jetstream().add_stream(name=streams.name, subjects=[f"{streams.subject}.>"])
        finally:
            await nc.close()

    run(make())
    try:
        yield streams
    finally:

        async def drop() -> None:
            nc = await _connect()
            js = nc.jetstream()
            try:
                for name in await js.streams_info():
                    if name.config.name.startswith(streams.name):
                        await js.delete_stream(name.config.name)
                with contextlib.suppress(Exception):
                    kv = await js.key_value("conveyor_stream_state")
                    for key in await kv.keys():
                        if token in key:
                            await kv.purge(key)
            finally:
                await nc.close()

        run(drop())


@dataclass
class RedisStreams:
    """The same for Redis: the input stream ``PREFIX.in`` and targets ``PREFIX.<role>``."""

    name: str
    prefix: str
    kind = "redis"

    def __post_init__(self) -> None:
        self.ids: list[str] = []

    def _client(self) -> Any:
        import redis

        return redis.Redis.from_url(REDIS_URL)

    @property
    def key(self) -> str:
        return f"{self.prefix}.in"

    def target(self, role: str) -> str:
        return f"{self.prefix}.{role}"

    def captured_target(self) -> str:
        return self.key

    def url(self, durable: str = "scorer", **options: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"{REDIS_URL}?stream={self.key}&group={durable}" + (f"&{query}" if query else "")

    def publish(self, records: list[Any], *, ids: bool = False) -> None:
        client = self._client()
        try:
            pipe = client.pipeline(transaction=False)
            for i, r in enumerate(records):
                body = r if isinstance(r, bytes) else orjson.dumps(r)
                fields = {"data": body, **({"id": f"m{i}"} if ids else {})}
                pipe.xadd(self.key, fields)
            for i, entry in enumerate(pipe.execute()):
                self.ids.append(f"m{i}" if ids else f"{self.key}:{entry.decode()}")
        finally:
            client.close()

    def read(self, role: str) -> list[dict[str, Any]]:
        client = self._client()
        try:
            return [orjson.loads(f[b"data"]) for _, f in client.xrange(self.target(role))]
        finally:
            client.close()

    def settled(self, durable: str = "scorer") -> tuple[int, int]:
        client = self._client()
        try:
            group = next(g for g in client.xinfo_groups(self.key) if g["name"].decode() == durable)
            return int(group["lag"] or 0), int(group["pending"])
        finally:
            client.close()


@contextlib.contextmanager
def redis_streams() -> Iterator[RedisStreams]:
    """An input stream key nobody else uses; every key under its prefix is deleted after."""
    import redis

    require("127.0.0.1", 6379, "Redis")
    token = uuid.uuid4().hex[:10]
    streams = RedisStreams(f"cvs_{token}", f"cvs.{token}")
    try:
        yield streams
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = [*client.scan_iter(match=f"*{token}*", count=1000)]
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@contextlib.contextmanager
def broker(kind: str) -> Iterator[Any]:
    """``nats`` or ``redis``: a fresh input stream and its targets, removed after."""
    with nats_streams() if kind == "nats" else redis_streams() as made:
        yield made
