"""MLflow's side of the registry benchmark; runs in .bench-venvs/mlflow.

    python mlflow_registry.py --url sqlite:////tmp/x/mlflow.db --workdir /tmp/x \
        --sizes '{...}' --phase fill
    python mlflow_registry.py ... --phase measure --measure alias --budget 30

Imports nothing from Conveyor. MLflow's model versions point at a ``source``
URI and store no bytes, so registration here writes metadata only. The
fill's bulk rows copy version 1's row (written by ``create_model_version``)
through MLflow's own table definitions, with their own version number,
source, creation time and tags. MLflow has no batch registration API.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from registry_workload import ALIAS, MODEL, Sizes, emit_json, sample, tags


def fill(client: MlflowClient, url: str, workdir: Path, s: Sizes) -> None:
    import sqlalchemy as sa
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion, SqlModelVersionTag

    client.create_registered_model(MODEL)  # creates the schema
    client.create_model_version(MODEL, source=f"{workdir}/models/0", tags=tags(0))
    versions = SqlModelVersion.__table__
    version_tags = SqlModelVersionTag.__table__
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            first = dict(
                conn.execute(sa.select(versions).where(versions.c.version == 1)).mappings().one()
            )
            tag_template = dict(
                conn.execute(sa.select(version_tags).where(version_tags.c.version == 1))
                .mappings()
                .first()
                or {}
            )
        start = int(first["creation_time"]) - s.versions - 60_000  # all in the past
        with engine.begin() as conn:
            conn.execute(
                sa.update(versions)
                .where(versions.c.version == 1)
                .values(creation_time=start, last_updated_time=start)
            )
        same_location = first.get("storage_location") == first.get("source")
        for lo in range(1, s.versions, s.fill_chunk):
            rows, tag_rows = [], []
            for i in range(lo, min(lo + s.fill_chunk, s.versions)):
                source = f"{workdir}/models/{i}"
                row = {
                    **first,
                    "version": i + 1,
                    "source": source,
                    "creation_time": start + i,
                    "last_updated_time": start + i,
                }
                if same_location:
                    row["storage_location"] = source
                rows.append(row)
                for key, value in tags(i).items():
                    tag_rows.append({**tag_template, "version": i + 1, "key": key, "value": value})
            with engine.begin() as conn:
                conn.execute(sa.insert(versions), rows)
                conn.execute(sa.insert(version_tags), tag_rows)
    finally:
        engine.dispose()
    client.set_registered_model_alias(MODEL, ALIAS, str(s.versions // 2))
    if url.startswith("postgresql"):
        engine = sa.create_engine(url)
        with engine.connect() as conn:  # what autovacuum does to a grown table
            conn.execute(sa.text("ANALYZE"))
            conn.commit()
        engine.dispose()


def measure(client: MlflowClient, workdir: Path, s: Sizes, name: str, budget: float) -> None:
    n = s.versions

    def alias() -> None:
        found = client.get_model_version_by_alias(MODEL, ALIAS)
        assert int(found.version) == n // 2

    def first_page() -> None:
        page = client.search_model_versions(f"name='{MODEL}'", max_results=s.page)
        assert len(page) == min(s.page, n)

    def tagged_page() -> None:
        page = client.search_model_versions(
            f"name='{MODEL}' and tags.parity='odd'", max_results=s.page
        )
        assert len(page) == min(s.page, n // 2)
        assert all(v.tags["parity"] == "odd" for v in page)

    def all_versions() -> None:
        seen, token = 0, None
        while True:
            page = client.search_model_versions(
                f"name='{MODEL}'", max_results=s.all_page, page_token=token
            )
            seen += len(page)
            token = page.token
            if not token:
                break
        assert seen == n, seen

    counter = iter(range(n + 1, n + 10_000_000))

    def register() -> None:
        i = next(counter)
        client.create_model_version(MODEL, source=f"{workdir}/models/{i}", tags=tags(i))

    calls = {
        "alias": (alias, s.lookups),
        "first_page": (first_page, s.searches),
        "tagged_page": (tagged_page, s.searches),
        "all_versions": (all_versions, s.all_passes),
        "register": (register, s.registrations),
    }
    call, repeats = calls[name]
    if name == "register":
        register()  # untimed warm-up: first connection, schema check
    else:
        client.get_registered_model(MODEL)  # untimed: first connection, schema check
    print("mlflow: ready", file=sys.stderr, flush=True)
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
    client = MlflowClient(tracking_uri=args.url, registry_uri=args.url)
    if args.phase == "fill":
        fill(client, args.url, args.workdir, s)
        emit_json({"tool": "mlflow", "version": mlflow.__version__})
    else:
        measure(client, args.workdir, s, args.measure, args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
