"""The quickstart's scale-out step: the champion scores a batch, resumably.

1. the last weeks of transactions are written to a folder of Parquet files, with
   three rows a careless export broke (a text log amount, a missing one, a missing
   category);
2. ``score_batch`` scores them with ``fraud-detector@champion`` into Parquet
   partitions and a manifest: the broken rows go to ``rejected/`` with their reason,
   the rest are scored; the run is a run record with its lineage;
3. resuming the finished run is refused (nothing is missing), and running the job
   again rewrites the same partition files: a batch job that is re-run (or resumed
   after a crash) never doubles a row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

import conveyor
from conveyor.errors import ConflictError
from conveyor.scoring import score_batch


def _broken(rows: pd.DataFrame) -> pd.DataFrame:
    """Three rows a careless export broke, one way each; its columns are text, as a CSV
    turned into Parquet would have them."""
    broken = rows.head(3).astype({"log_amount": str})
    broken["log_amount"] = ["2,53", None, broken["log_amount"].iloc[2]]
    broken["merchant_category"] = [*broken["merchant_category"].iloc[:2], None]
    return broken


def run_scoring(
    project: conveyor.Project,
    console: Console,
    raw: pd.DataFrame,
    features: list[str],
    *,
    model: str,
    step: str,
) -> dict[str, Any]:
    """Steps 1-3 of the module; returns what the quickstart's summary and tests read."""
    from model import add_features

    folder = Path(project.root) / "exports" / "transactions"
    folder.mkdir(parents=True, exist_ok=True)
    rows = add_features(raw).tail(20_000)[["transaction_id", *features]].reset_index(drop=True)
    rows = rows.astype({"merchant_category": str})
    # two files: the clean export, and a small one with the broken rows
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), folder / "part-0.parquet")
    broken = pa.Table.from_pandas(_broken(rows), preserve_index=False)
    pq.write_table(broken, folder / "part-1.parquet")

    output = Path(project.root) / "scores" / "nightly"
    first = score_batch(
        project,
        f"{model}@champion",
        input=str(folder),
        output=str(output),
        workers=0,  # in this process: the quickstart is small; the default is one per core
        actor="quickstart",
        reason="nightly scores",
    )
    rejected = pd.read_parquet(first.rejected_output) if first.rejected_output else None
    console.print(
        f"[green]{step}[/] scored {first.rows:,} rows with {first.model} v{first.version} "
        f"into {first.partitions} Parquet partitions ({first.rows_per_s:,.0f} rows/s): "
        f"{first.scored:,} scored, {first.rejected} rejected, kept with their reason"
    )
    if rejected is not None:
        for reason in rejected["_reason"]:
            console.print(f"    rejected: {reason}")
    try:
        score_batch(
            project,
            f"{model}@champion",
            input=str(folder),
            output=str(output),
            workers=0,
            actor="quickstart",
            resume=first.run_id,
        )
    except ConflictError as done:
        console.print(
            f"    resume {first.run_id[:8]}: refused ({done.code}), nothing left to score"
        )
    again = score_batch(
        project,
        f"{model}@champion",
        input=str(folder),
        output=str(output),
        workers=0,
        actor="quickstart",
        reason="re-run",
    )
    written = sum(pq.read_metadata(part).num_rows for part in output.glob("part-*.parquet"))
    console.print(
        f"    run again: the same {again.partitions} partition files rewritten, "
        f"{written:,} rows in {output.name}/ (none doubled); lineage in "
        f"{Path(again.manifest or '').name}"
    )
    return {"first": first, "again": again, "rejected": rejected, "written": written}
