"""``score_batch``: a model version over an input, partition by partition, resumable.

::

    from conveyor.scoring import score_batch

    result = score_batch(project, "fraud@champion", input="data/customers/",
                         output="scores/")
    result.rows, result.scored, result.rejected     # 1_000_000, 999_990, 10
    result.run_id                                   # the run record (store.runs)

    # a crash midway: only the partitions not recorded are scored again
    score_batch(project, "fraud@champion", input="data/customers/", output="scores/",
                resume=result.run_id)

The coordinator resolves the version (one that failed its gates is refused unless
``force`` with a ``reason``), opens the input (:mod:`conveyor.scoring.sources`) and
the output (:mod:`conveyor.scoring.sinks`), starts a run record (``kind="scoring"``:
the version, the input and its fingerprint, the output; rows, scored and rejected
as metrics) and writes ``scoring.batch_started``. The engine
(:mod:`conveyor.scoring.engines`) scores the partitions; each one committed is
recorded in ``scoring_partitions``. At the end a folder output gets its
``_manifest.json``, the run is finished and ``scoring.batch_finished`` written; on
any error the run is marked failed (``scoring.batch_failed``) and ``resume=RUN_ID``
scores what is missing, with the same version and the same input (a changed input
fingerprint is refused).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.errors import (
    ConflictError,
    ConveyorError,
    GateFailedError,
    InvalidInputError,
    NotFoundError,
)
from conveyor.scoring.engines import (
    PartitionResult,
    WorkerSetup,
    check_engine,
    run_local,
    run_ray,
)
from conveyor.scoring.events import BATCH_FAILED, BATCH_FINISHED, BATCH_STARTED

if TYPE_CHECKING:
    from conveyor.project import Project
    from conveyor.registry.registry import Registry
    from conveyor.registry.versions import ModelVersion
    from conveyor.scoring.sinks import FolderSink, TableSink
    from conveyor.scoring.sources import Partition, Source

__all__ = ["RUN_KIND", "BatchResult", "Progress", "score_batch"]

#: The ``kind`` of a batch scoring's run record.
RUN_KIND = "scoring"
_HEARTBEAT_S = 10.0


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run stands, after each partition: for a progress bar."""

    run_id: str
    partitions_done: int
    partitions: int | None
    rows: int
    rejected: int
    total_rows: int | None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a run did, over all its attempts."""

    run_id: str
    model: str
    version: int
    version_id: str
    input: str
    input_fingerprint: str
    output: str
    engine: str
    rows: int
    scored: int
    rejected: int
    partitions: int
    scored_now: int
    """Partitions this call scored (the rest were done by an earlier attempt)."""
    seconds: float
    manifest: str | None = None
    rejected_output: str | None = None
    results: tuple[PartitionResult, ...] = field(default=(), repr=False)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model": self.model,
            "version": self.version,
            "version_id": self.version_id,
            "input": self.input,
            "input_fingerprint": self.input_fingerprint,
            "output": self.output,
            "engine": self.engine,
            "rows": self.rows,
            "scored": self.scored,
            "rejected": self.rejected,
            "partitions": self.partitions,
            "scored_now": self.scored_now,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            "manifest": self.manifest,
            "rejected_output": self.rejected_output,
        }


def score_batch(
    project: Project,
    model: str,
    *,
    input: str,
    output: str,
    query: str | None = None,
    table: str | None = None,
    key: str | None = None,
    engine: str | None = None,
    workers: int | None = None,
    chunk_rows: int | None = None,
    resume: str | None = None,
    force: bool = False,
    reason: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    output_storage_options: Mapping[str, Any] | None = None,
    rejected_output: str | None = None,
    file_format: str | None = None,
    csv_split_bytes: int | None = None,
    ray_address: str | None = None,
    entity_time: str = "event_timestamp",
    env: Mapping[str, str] | None = None,
    actor: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    on_workers: Callable[[list[int]], None] | None = None,
) -> BatchResult:
    """Score ``input`` with ``model`` (``NAME``, ``NAME@ALIAS``, ``NAME@N``) into ``output``.

    See the module. ``workers`` local processes or Ray actors (default
    ``scoring.workers``, else one per core; 0 scores in this process);
    ``storage_options`` go to fsspec for the input (and the output unless
    ``output_storage_options``); a version trained on a feature service gets its
    features joined as of each row's ``entity_time`` column; ``env`` adds
    ``CONVEYOR_*`` variables the workers open the project with (the coordinator's
    environment is theirs already).
    """
    from conveyor.scoring.settings import scoring_of
    from conveyor.scoring.sinks import FolderSink, open_sink
    from conveyor.scoring.sources import CSV_SPLIT_BYTES, open_source

    settings = scoring_of(project.spec)
    engine = check_engine(engine or settings.engine)
    chunk_rows = _positive(chunk_rows or settings.chunk_rows, "chunk_rows")
    if workers is None:
        workers = settings.workers if settings.workers is not None else (os.cpu_count() or 1)
    if workers < 0:
        raise InvalidInputError(f"workers must be 0 or more, got {workers}", field="workers")
    if force and not (reason and reason.strip()):
        raise InvalidInputError(
            "scoring with a version that failed its gates (--force) needs a --reason",
            field="reason",
        )
    previous = _previous_run(project, resume) if resume else None
    if previous is not None:
        # The same cut as the first attempt: other split sizes would give other partition
        # ids, and rows scored twice under two names.
        cut = previous.params.get("cut") or {}
        chunk_rows = int(cut.get("chunk_rows", chunk_rows))
        csv_split_bytes = cut.get("csv_split_bytes", csv_split_bytes)
        file_format = cut.get("file_format", file_format)
    version = _version(project, model, previous, force=force)
    source = open_source(
        project,
        input,
        query=query,
        storage_options=storage_options,
        file_format=file_format,
        csv_split_bytes=csv_split_bytes or CSV_SPLIT_BYTES,
    )
    if source.kind == "sql" and engine == "ray":
        raise InvalidInputError(
            "the ray engine reads files and data set versions; score a sql: input with "
            "the local engine",
            field="engine",
        )
    fingerprint = source.fingerprint()
    sink = open_sink(
        _dated(output),
        table=table,
        key=key,
        storage_options=output_storage_options
        if output_storage_options is not None
        else storage_options,
    )
    if previous is not None:
        _check_same(previous, version, fingerprint, sink.description)
    sink.prepare()
    listed: list[Partition] | None = None
    if source.kind != "sql":
        listed = list(source.partitions(chunk_rows))
        _check_unique_ids(listed)
    cut = {
        "chunk_rows": chunk_rows,
        "csv_split_bytes": csv_split_bytes or CSV_SPLIT_BYTES,
        "file_format": file_format,
    }
    run = _start_run(
        project, previous, version, source, fingerprint, sink, engine, force, reason, actor, cut
    )
    if isinstance(sink, FolderSink):
        rejected_sink = sink
    else:
        rejected_sink = FolderSink(
            rejected_output or str(project.root / ".conveyor" / "scoring" / run.id / "rejected"),
            rejected_folder="",
        )
    done = _recorded(project, run.id)
    signature = None
    if version.signature:
        from conveyor.registry.signature import Signature

        signature = Signature.from_dict(version.signature)
    setup = WorkerSetup(
        root=str(project.root),
        env={k: v for k, v in (env or {}).items()},
        model=version.model,
        number=version.number,
        sink=sink,
        rejected=rejected_sink,
        chunk_rows=chunk_rows,
        storage_options=dict(storage_options or {}),
        text_columns=tuple(signature.names) if signature is not None else (),
        key=key if not isinstance(sink, FolderSink) else None,
        entity_time=entity_time,
    )
    total = len(listed) if listed is not None else None
    pending = (
        [p for p in listed if p.id not in done]
        if listed is not None
        else (p for p in source.partitions(chunk_rows) if p.id not in done)
    )
    subject, subject_version = f"model:{version.model}", str(version.number)
    base = {
        "run_id": run.id,
        "model": version.model,
        "version": version.number,
        "version_id": version.id,
    }
    project.events.record(
        BATCH_STARTED,
        subject=subject,
        subject_version=subject_version,
        actor=actor,
        trace_id=run.id,
        payload={
            **base,
            "input": source.description,
            "input_fingerprint": fingerprint,
            "output": sink.description,
            "engine": engine,
            "partitions": total if total is not None else -1,
            "pending": len(pending) if isinstance(pending, list) else -1,
            "resumed": previous is not None,
            "forced": force,
            "reason": reason,
        },
    )
    started = time.perf_counter()
    results: list[PartitionResult] = []
    beat = [time.monotonic()]
    count = [len(done)]
    sums = [sum(r.rows for r in done.values()), sum(r.rejected for r in done.values())]

    def on_result(result: PartitionResult) -> None:
        _record(project, run.id, result)
        results.append(result)
        count[0] += 1
        sums[0] += result.rows
        sums[1] += result.rejected
        if time.monotonic() - beat[0] > _HEARTBEAT_S:
            project.store.runs.heartbeat(run.id)
            beat[0] = time.monotonic()
        if progress is not None:
            progress(Progress(run.id, count[0], total, sums[0], sums[1], source.total_rows()))

    try:
        if engine == "ray":
            run_ray(setup, pending, workers, on_result, address=ray_address or settings.ray_address)
        else:
            run_local(setup, pending, workers, on_result, on_start=on_workers)
        everything = _recorded(project, run.id)
        manifest = None
        if isinstance(sink, FolderSink):
            manifest = _write_manifest(sink, run.id, version, source, fingerprint, everything)
    except BaseException as exc:
        message = _describe(exc)
        try:
            project.store.runs.finish(run.id, "failed", error=message[:2000])
            project.events.record(
                BATCH_FAILED,
                subject=subject,
                subject_version=subject_version,
                actor=actor,
                trace_id=run.id,
                payload={**base, "error": message, "done": count[0], "partitions": total or -1},
            )
        finally:
            close = getattr(sink, "close", None)
            if close is not None:
                close()
        raise
    close = getattr(sink, "close", None)
    if close is not None:
        close()
    seconds = time.perf_counter() - started
    rows = sum(r.rows for r in everything.values())
    scored = sum(r.scored for r in everything.values())
    rejected = sum(r.rejected for r in everything.values())
    project.store.runs.log_metrics(
        run.id,
        {
            "rows": rows,
            "scored": scored,
            "rejected": rejected,
            "partitions": len(everything),
            "seconds": seconds,
            "rows_per_s": (sum(r.rows for r in results) / seconds) if seconds else 0.0,
        },
    )
    project.store.runs.finish(run.id, "succeeded")
    project.events.record(
        BATCH_FINISHED,
        subject=subject,
        subject_version=subject_version,
        actor=actor,
        trace_id=run.id,
        payload={
            **base,
            "rows": rows,
            "scored": scored,
            "rejected": rejected,
            "partitions": len(everything),
            "seconds": round(seconds, 3),
        },
    )
    return BatchResult(
        run_id=run.id,
        model=version.model,
        version=version.number,
        version_id=version.id,
        input=source.description,
        input_fingerprint=fingerprint,
        output=sink.description,
        engine=engine,
        rows=rows,
        scored=scored,
        rejected=rejected,
        partitions=len(everything),
        scored_now=len(results),
        seconds=seconds,
        manifest=manifest,
        rejected_output=rejected_sink.rejected_url if rejected else None,
        results=tuple(sorted(everything.values(), key=lambda r: r.key)),
    )


def _positive(value: int, name: str) -> int:
    if not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}", field=name)
    return value


def _dated(output: str) -> str:
    """``{date}`` in an output is the UTC date of the run (a nightly job's folder)."""
    return output.replace("{date}", datetime.now(UTC).strftime("%Y-%m-%d"))


def _describe(exc: BaseException) -> str:
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(exc, BrokenProcessPool):
        return (
            "a worker process died while scoring (killed, or out of memory); the "
            "partitions it had not committed are scored again by --resume"
        )
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, ConveyorError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def _version(project: Project, model: str, previous: Any, *, force: bool) -> ModelVersion:
    registry: Registry = project.registry
    if previous is not None:
        version = registry.by_id(previous.params["version_id"])
    else:
        version = registry.resolve(model)
    report = registry.gate_report(version)
    if report is not None and not report.passed and not force:
        failed = ", ".join(c.name for c in report.failures)
        raise GateFailedError(
            f"{version.ref} failed its gates (report {report.id}: {failed}); score with it "
            "anyway with force=True and a reason (CLI: --force --reason)",
            report=report,
            model=version.model,
            version=version.number,
            failed=[c.name for c in report.failures],
        )
    return version


def _previous_run(project: Project, run_id: str) -> Any:
    try:
        run = project.store.runs.get(run_id)
    except (NotFoundError, InvalidInputError):
        raise NotFoundError(
            f"there is no scoring run {run_id!r} to resume (conveyor runs list --kind scoring)",
            run_id=run_id,
        ) from None
    if run.kind != RUN_KIND:
        raise InvalidInputError(
            f"run {run_id} is a {run.kind!r} run, not a batch scoring", field="resume"
        )
    if run.status == "succeeded":
        raise ConflictError(
            f"run {run_id} already scored every partition (succeeded at {run.ended_at})",
            run_id=run_id,
        )
    return run


def _check_same(previous: Any, version: ModelVersion, fingerprint: str, output: str) -> None:
    params = previous.params
    if params.get("input_fingerprint") != fingerprint:
        raise ConflictError(
            f"the input changed since run {previous.id} (fingerprint "
            f"{params.get('input_fingerprint')} then, {fingerprint} now): start a new run",
            run_id=previous.id,
            field="input",
        )
    if params.get("output") != output:
        raise ConflictError(
            f"run {previous.id} wrote to {params.get('output')}, not {output}: resume it with "
            "the same output",
            run_id=previous.id,
            field="output",
        )


def _start_run(
    project: Project,
    previous: Any,
    version: ModelVersion,
    source: Source,
    fingerprint: str,
    sink: FolderSink | TableSink,
    engine: str,
    force: bool,
    reason: str | None,
    actor: str | None,
    cut: Mapping[str, Any],
) -> Any:
    runs = project.store.runs
    if previous is not None:
        return runs.update(
            previous.id,
            expected_version=previous.version,
            status="running",
            ended_at=None,
            error=None,
            tags={**previous.tags, "attempts": int(previous.tags.get("attempts", 1)) + 1},
        )
    params = {
        "model": version.model,
        "version": version.number,
        "version_id": version.id,
        "input": source.description,
        "input_fingerprint": fingerprint,
        "input_version": source.input_version(),
        "output": sink.description,
        "engine": engine,
        "forced": force,
        "reason": reason,
        "cut": dict(cut),
    }
    return runs.start(
        RUN_KIND,
        version.ref,
        params=params,
        tags={"actor": actor, "attempts": 1},
        project=project.name,
    )


def _check_unique_ids(partitions: list[Partition]) -> None:
    seen: dict[str, str] = {}
    for p in partitions:
        if p.id in seen:  # two files of one name under different roots: never expected
            raise InvalidInputError(
                f"partitions {seen[p.id]} and {p.key} have the same id", field="input"
            )
        seen[p.id] = p.key


def _recorded(project: Project, run_id: str) -> dict[str, PartitionResult]:
    import sqlalchemy as sa

    from conveyor.scoring.tables import ScoredPartitionRecord as R

    with project.store.read() as session:
        rows = session.execute(sa.select(R).where(R.run_id == run_id)).scalars().all()
        return {
            r.partition: PartitionResult(
                r.partition,
                r.source,
                r.rows,
                r.scored,
                r.rejected,
                r.path,
                r.sha256,
                r.rejected_path,
            )
            for r in rows
        }


def _record(project: Project, run_id: str, result: PartitionResult) -> None:
    from conveyor.scoring.tables import ScoredPartitionRecord

    with project.store.session() as session:
        session.merge(
            ScoredPartitionRecord(
                run_id=run_id,
                partition=result.partition,
                source=result.key[:1000],
                rows=result.rows,
                scored=result.scored,
                rejected=result.rejected,
                path=result.path,
                sha256=result.sha256,
                rejected_path=result.rejected_path,
            )
        )


def _write_manifest(
    sink: FolderSink,
    run_id: str,
    version: ModelVersion,
    source: Source,
    fingerprint: str,
    results: Mapping[str, PartitionResult],
) -> str:
    from conveyor.scoring.sinks import MANIFEST

    ordered = sorted(results.values(), key=lambda r: r.key)
    document = {
        "format": "conveyor.scoring/1",
        "run_id": run_id,
        "model": version.model,
        "version": version.number,
        "model_version_id": version.id,
        "input": source.description,
        "input_fingerprint": fingerprint,
        "input_version": source.input_version(),
        "rows": sum(r.rows for r in ordered),
        "scored": sum(r.scored for r in ordered),
        "rejected": sum(r.rejected for r in ordered),
        "written_at": datetime.now(UTC).isoformat(),
        "partitions": [r.to_dict() for r in ordered],
    }
    sink.put_bytes(MANIFEST, json.dumps(document, indent=2).encode())
    return sink.path(MANIFEST)
