"""A project with a small LogisticRegression registered, and inputs to score with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from conveyor.project import Project, init_project

FEATURES = ["f0", "f1", "f2", "f3"]


def training_frame(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    y = (x["f0"] + x["f1"] - x["f2"] > 0).astype(int).to_numpy()
    return x, y


def make_project(root: Path) -> Project:
    """A fresh project at ``root`` with ``lr@1`` registered (signature f0..f3, float64)."""
    from sklearn.linear_model import LogisticRegression

    init_project(root)
    project = Project.open(root)
    x, y = training_frame()
    project.registry.register("lr", LogisticRegression().fit(x, y), signature_from=x)
    return project


def rows(n: int, *, start: int = 0, seed: int = 1) -> pa.Table:
    """``n`` rows to score: an ``id`` then the four features."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    frame.insert(0, "id", np.arange(start, start + n, dtype=np.int64))
    return pa.Table.from_pandas(frame, preserve_index=False)


def write_parquet_folder(folder: Path, files: int, rows_each: int, *, row_group: int) -> pa.Table:
    """``files`` Parquet files of ``rows_each`` rows in row groups of ``row_group``; all rows."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = []
    for i in range(files):
        table = rows(rows_each, start=i * rows_each, seed=i)
        pq.write_table(table, folder / f"part{i}.parquet", row_group_size=row_group)
        tables.append(table)
    return pa.concat_tables(tables)


def expected(project: Project, table: pa.Table) -> np.ndarray:
    """What the registered model answers for ``table`` (its features), directly."""
    loaded = project.registry.load("lr@1")
    return np.asarray(loaded.model.predict(table.select(FEATURES).to_pandas()))


def read_output(folder: Path) -> pa.Table:
    """Every partition of a folder output (the manifest and rejected rows left out)."""
    files = sorted(p for p in folder.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by("id")
