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
from conveyor.testing.services import NATS_URL, require

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
                    await js.publish(f"{self.subject}.x", body, headers=headers)
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
