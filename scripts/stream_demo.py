"""Score a short stream on the local NATS: 100 events in, 100 scores out, 2 dead letters.

    .venv/bin/python scripts/stream_demo.py [nats://127.0.0.1:4222]

Needs a NATS server with JetStream (``nats-server -js``; ``make services`` starts one) and
``conveyor[nats]`` with scikit-learn. Makes a project in a temporary folder, registers a
LogisticRegression, publishes 100 events and 2 bad ones to a stream of its own, scores
them with ``score_stream`` and deletes the streams it made.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import uuid
from pathlib import Path

import nats
import pandas as pd
from sklearn.linear_model import LogisticRegression

from conveyor.project import Project, init_project
from conveyor.scoring.stream import score_stream

URL = sys.argv[1] if len(sys.argv) > 1 else "nats://127.0.0.1:4222"
TOKEN = uuid.uuid4().hex[:8]
STREAM, SUBJECT = f"demo_{TOKEN}", f"demo.{TOKEN}"


async def setup() -> None:
    nc = await nats.connect(URL)
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=[f"{SUBJECT}.in"])
    for i in range(100):
        event = {"user": f"u{i % 5}", "amount": float(i), "age": float(20 + i % 40)}
        await js.publish(f"{SUBJECT}.in", json.dumps(event).encode())
    await js.publish(f"{SUBJECT}.in", b"not json")
    await js.publish(f"{SUBJECT}.in", json.dumps({"user": "u9", "amount": "lots"}).encode())
    await nc.close()


async def teardown() -> None:
    nc = await nats.connect(URL)
    js = nc.jetstream()
    for info in await js.streams_info():
        if TOKEN in info.config.name:
            await js.delete_stream(info.config.name)
    await nc.close()


def main() -> None:
    root = Path(tempfile.mkdtemp()) / "demo"
    init_project(root)
    x = pd.DataFrame(
        {"amount": [float(i) for i in range(200)], "age": [20.0 + i % 40 for i in range(200)]}
    )
    with Project.open(root) as project:
        model = LogisticRegression().fit(x, (x["amount"] > 50).astype(int))
        project.registry.register("risk", model, signature_from=x)
        asyncio.run(setup())
        try:
            result = score_stream(
                project,
                "risk",
                source=f"{URL}/{STREAM}?durable=demo",
                output=f"{SUBJECT}.scores",
                dead_letter=f"{SUBJECT}.dlq",
                key_field="user",
                max_messages=102,
                idle_timeout=5,
            )
        finally:
            asyncio.run(teardown())
    s = result.stats
    print(
        f"{s.messages} messages: {s.scored} scored -> {SUBJECT}.scores, "
        f"{s.dead_lettered} dead-lettered with their reason -> {SUBJECT}.dlq"
    )


if __name__ == "__main__":
    main()
