"""The quickstart's scale-out steps: the champion scores a batch, resumably, and a stream.

1. the last weeks of transactions are written to a folder of Parquet files, with
   three rows a careless export broke (a text log amount, a missing one, a missing
   category);
2. ``score_batch`` scores them with ``fraud-detector@champion`` into Parquet
   partitions and a manifest: the broken rows go to ``rejected/`` with their reason,
   the rest are scored; the run is a run record with its lineage;
3. resuming the finished run is refused (nothing is missing), and running the job
   again rewrites the same partition files: a batch job that is re-run (or resumed
   after a crash) never doubles a row;
4. (``run_stream``) 200 transactions and 2 poison messages on a NATS JetStream stream
   are scored as they arrive, through the champion's route: scores to a subject, the
   poison to a dead-letter subject with its reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
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
        f"    run again: the same {again.partitions} partitions rewritten, "
        f"{written:,} rows in {output.name}/ (none doubled); lineage in "
        f"{Path(again.manifest or '').name}"
    )
    return {"first": first, "again": again, "rejected": rejected, "written": written}


#: Where the quickstart looks for NATS (JetStream); `make services` starts one there.
NATS_URL = os.environ.get("CONVEYOR_DEMO_NATS", "nats://127.0.0.1:4222")


def run_stream(
    project: conveyor.Project,
    console: Console,
    raw: pd.DataFrame,
    features: list[str],
    *,
    model: str,
    step: str,
) -> dict[str, Any] | None:
    """Stream scoring: 200 transactions and 2 poison messages published to a JetStream
    stream of the quickstart's own, scored as they arrive by the champion's route, the
    scores published to a subject, the poison dead-lettered with their reason. Skipped,
    with a line saying how to run it, when no NATS answers at ``NATS_URL``."""
    from model import add_features

    from conveyor.errors import BackendUnavailableError
    from conveyor.scoring.stream import score_stream

    try:
        import nats.errors
    except ImportError:
        console.print(
            f"[yellow]{step}[/] stream scoring skipped: the NATS client is not installed "
            "(pip install 'conveyor[nats]')"
        )
        return None
    token = uuid.uuid4().hex[:8]
    stream, subject = f"quickstart_{token}", f"quickstart.{token}"
    rows = add_features(raw).tail(200)[["customer_id", *features]]
    events = [
        json.dumps(r).encode() for r in rows.astype({"merchant_category": str}).to_dict("records")
    ]
    poison = [b"{not json", json.dumps({"customer_id": 1, "log_amount": "lots"}).encode()]
    try:
        asyncio.run(_publish(stream, f"{subject}.in", [*events, *poison]))
    except (OSError, TimeoutError, nats.errors.Error) as down:
        console.print(
            f"[yellow]{step}[/] stream scoring skipped: no NATS at {NATS_URL} ({down}); "
            "start one with `make services` and run the quickstart again"
        )
        return None
    try:
        result = score_stream(
            project,
            f"{model}",
            source=f"{NATS_URL}/{stream}?durable=quickstart",
            output=f"{subject}.scores",
            dead_letter=f"{subject}.dlq",
            key_field="customer_id",
            max_messages=len(events) + len(poison),
            idle_timeout=5,
        )
    except BackendUnavailableError as down:
        console.print(f"[yellow]{step}[/] stream scoring skipped: {down}")
        return None
    finally:
        asyncio.run(_delete_streams(token))
    s = result.stats
    versions = ", ".join(f"{ref}: {n}" for ref, n in sorted(s.by_version.items()))
    console.print(
        f"[green]{step}[/] scored a stream on NATS JetStream: {s.messages} messages, "
        f"{s.scored} scored by the route ({versions}) -> {subject}.scores, "
        f"{s.dead_lettered} dead-lettered with their reason -> {subject}.dlq "
        f"({result.seconds:.1f} s)"
    )
    return {"result": result, "published": len(events) + len(poison)}


async def _publish(stream: str, subject: str, messages: list[bytes]) -> None:
    import nats

    connection = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = connection.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        for message in messages:
            await js.publish(subject, message)
    finally:
        await connection.close()


async def _delete_streams(token: str) -> None:
    """The quickstart's input stream and the ones scoring made for its outputs."""
    import nats

    connection = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = connection.jetstream()
        for info in await js.streams_info():
            if token in info.config.name or any(token in s for s in info.config.subjects or []):
                await js.delete_stream(info.config.name)
    finally:
        await connection.close()
