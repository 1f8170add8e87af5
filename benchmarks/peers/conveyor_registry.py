"""Conveyor's side of the registry benchmark; runs in Conveyor's virtualenv.

    python conveyor_registry.py --url sqlite:////tmp/x/c.db --workdir /tmp/x \
        --sizes '{...}' --phase fill
    python conveyor_registry.py ... --phase measure --measure alias --budget 30

Each registered version is a small PythonModel, pickled and stored
content-addressed (sha256) in a file:// artifact store: registration writes
the artifact's bytes as well as the row. No event log (MLflow has none to
write). The fill's bulk rows (versions 2..N) carry distinct artifact digests
whose bytes are not stored: no measured read loads a model.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from registry_workload import ALIAS, MODEL, Sizes, emit_json, sample, tags

import conveyor
from conveyor.artifacts.store import ArtifactStore
from conveyor.registry import PythonModel, Registry
from conveyor.registry.batch import RegisterItem, register_many
from conveyor.store.database import MetadataStore


class Offset(PythonModel):
    """A model of a few bytes: adds its offset (distinct per version, so no artifact is shared)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def predict(self, frame: Any) -> Any:
        return frame["x"] + self.offset


def fill(registry: Registry, s: Sizes) -> None:
    import sqlalchemy as sa

    from conveyor.registry.tables import ModelAliasRecord, ModelVersionRecord, RegisteredModelRecord
    from conveyor.store.types import utcnow

    store = registry.store
    versions = ModelVersionRecord.__table__
    models = RegisteredModelRecord.__table__
    first = registry.register(MODEL, Offset(0), tags=tags(0))  # the row Registry writes
    start = utcnow() - timedelta(milliseconds=s.versions + 60_000)  # all in the past
    with store.session() as session:
        session.execute(
            sa.update(versions).where(versions.c.id == first.id).values(created_at=start)
        )
    template = dataclasses.asdict(first)
    for lo in range(1, s.versions, s.fill_chunk):
        rows = [
            {
                **template,
                "id": uuid.uuid4().hex,
                "number": i + 1,
                "tags": tags(i),
                "artifact_digest": "sha256:" + hashlib.sha256(b"%d" % i).hexdigest(),
                "created_at": start + timedelta(milliseconds=i),
            }
            for i in range(lo, min(lo + s.fill_chunk, s.versions))
        ]
        with store.session() as session:
            session.execute(sa.insert(versions), rows)
    with store.session() as session:
        session.execute(
            sa.update(models).where(models.c.name == MODEL).values(latest_version=s.versions)
        )
        # The alias row directly: set_alias would ask for a passed gate report first.
        middle = session.execute(
            sa.select(versions.c.id).where(
                versions.c.model == MODEL, versions.c.number == s.versions // 2
            )
        ).scalar_one()
        session.add(ModelAliasRecord(model=MODEL, alias=ALIAS, version_id=middle))
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as conn:  # what autovacuum does to a grown table
            conn.execute(sa.text("ANALYZE"))
            conn.commit()


def measure(registry: Registry, s: Sizes, name: str, budget: float) -> None:
    n = s.versions

    def alias() -> None:
        assert registry.resolve(f"{MODEL}@{ALIAS}").number == n // 2

    def first_page() -> None:
        assert len(registry.list(MODEL, limit=s.page)) == min(s.page, n)

    def tagged_page() -> None:
        page = registry.search(name=MODEL, tag="parity=odd", limit=s.page)
        assert len(page) == min(s.page, n // 2)
        assert all(v.tags["parity"] == "odd" for v in page)

    def all_versions() -> None:
        seen, cursor = 0, None
        while True:
            page = registry.list(MODEL, limit=s.all_page, cursor=cursor)
            seen += len(page)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == n, seen

    counter = iter(range(n + 1, n + 10_000_000))

    def register() -> None:
        i = next(counter)
        registry.register(MODEL, Offset(i), tags=tags(i))

    def register_batch() -> None:
        items = []
        for _ in range(s.batch):
            i = next(counter)
            items.append(RegisterItem(MODEL, Offset(i), tags=tags(i)))
        register_many(registry, items)

    calls = {
        "alias": (alias, s.lookups),
        "first_page": (first_page, s.searches),
        "tagged_page": (tagged_page, s.searches),
        "all_versions": (all_versions, s.all_passes),
        "register": (register, s.registrations),
        "register_batch": (register_batch, s.batches),
    }
    call, repeats = calls[name]
    if name.startswith("register"):
        register()  # untimed warm-up: imports, git commit lookup, first connection
    else:
        registry.get(MODEL, 1)  # untimed: first connection
    print("conveyor: ready", file=sys.stderr, flush=True)
    sample(call, repeats, budget)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--sizes", required=True)
    parser.add_argument("--phase", choices=("fill", "measure"), required=True)
    parser.add_argument("--measure")
    parser.add_argument("--budget", type=float, default=30.0)
    args = parser.parse_args(argv)
    s = Sizes.from_json(args.sizes)
    with (
        MetadataStore.from_url(args.url) as store,  # migrates the fresh database on fill
        ArtifactStore.from_url((args.workdir / "artifacts").as_uri()) as artifacts,
    ):
        registry = Registry(store, artifacts)
        if args.phase == "fill":
            fill(registry, s)
            emit_json({"tool": "conveyor", "version": conveyor.__version__})
        else:
            measure(registry, s, args.measure, args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
