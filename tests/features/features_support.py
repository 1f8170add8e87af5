"""The small feature project the retrieval and online tests share: customers' spend with a
backfilled row, a 1 h TTL, windowed aggregates and an on-demand feature."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from conveyor.project import Project, init_project

SPEC = """
features:
  entities:
    customer: {join_keys: [customer_id]}
  views:
    spend:
      entities: [customer]
      source: {dataset: tx}
      event_time: ts
      created_time: ingested_at
      ttl: 1h
      features:
        - {name: amount, type: double}
      aggregates:
        - {column: amount, functions: [sum, count], windows: [1h, 24h]}
  on_demand:
    doubled:
      function: feats:doubled
      inputs: [spend:amount]
      outputs: {amount_x2: double}
  services:
    fraud: {features: ["spend:*", doubled]}
"""

MINUTE = timedelta(minutes=1)


def timestamps(t0: datetime, *offsets: timedelta) -> pa.Array:
    return pa.array([t0 + o for o in offsets], pa.timestamp("us", tz="UTC"))


def spend_project(root: Path, t0: datetime, env: dict[str, str] | None = None) -> Project:
    """The project at ``root``: customer 1 spends 10, 20, 40 at t0, +30 min, +2 h; customer
    2 spends 5 at t0, a row backfilled (written) an hour later."""
    init_project(root, name="fs")
    with (root / "conveyor.yaml").open("a") as spec:
        spec.write(SPEC)
    (root / "feats.py").write_text(
        "import pyarrow.compute as pc\n"
        "def doubled(table):\n"
        "    return table.append_column('amount_x2', pc.multiply(table['amount'], 2.0))\n"
    )
    project = Project.open(root, env=env or {})
    m = MINUTE
    project.data.ingest(
        "tx",
        pa.table(
            {
                "customer_id": pa.array([1, 1, 1, 2], pa.int64()),
                "ts": timestamps(t0, 0 * m, 30 * m, 120 * m, 0 * m),
                "ingested_at": timestamps(t0, 0 * m, 30 * m, 120 * m, 60 * m),
                "amount": [10.0, 20.0, 40.0, 5.0],
            }
        ),
        actor="test",
        new=True,
    )
    return project


def online_spend_project(backend: str, root: Path, t0: datetime) -> Iterator[Project]:
    """:func:`spend_project` with its online store on ``backend`` (``sqlite``, or the real
    Redis under a prefix of its own), emptied and closed afterwards: a fixture's body."""
    from conveyor.features.materialize import online_store

    env = {}
    if backend == "redis":
        env["CONVEYOR_ONLINE"] = f"redis://127.0.0.1:6379/0?prefix=test-{uuid.uuid4().hex}:"
    opened = spend_project(root, t0, env)
    try:
        yield opened
    finally:
        online_store(opened).kv.clear()
        opened.close()
