"""Several processes writing one SQLite file at once: no "database is locked", nothing lost."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from conveyor.store.database import MetadataStore
from conveyor.testing.store import write_runs


def test_three_processes_write_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    # The processes also race to create the schema: none has migrated it yet.
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(3) as pool:
        barrier = manager.Barrier(3, timeout=120)
        results = pool.starmap(write_runs, [(url, 200, f"proc{i}", barrier) for i in range(3)])
        pool.close()
        pool.join()
    written = {run_id for ids in results for run_id in ids}
    assert [len(ids) for ids in results] == [200, 200, 200]
    assert len(written) == 600

    with MetadataStore.from_url(url) as store:
        page = store.runs.list(limit=1000)
        assert {r.id for r in page} == written
        assert {r.status for r in page} == {"succeeded"}
        for i in range(3):
            assert len(store.runs.list(kind=f"proc{i}", limit=1000)) == 200
