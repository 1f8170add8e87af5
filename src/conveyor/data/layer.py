"""The data layer of a project: ingest with validation and quarantine, versions, replay, forget.

``Project.data`` returns one of these; the CLI (``conveyor data ...``) and
pipelines call it. Ingesting a batch is one pass through the same steps,
each recorded as an event:

1. extract from the data set's source (incrementally past its watermark), or
   take a frame handed in;
2. validate against the expectations of ``conveyor.yaml`` and the last
   accepted schema; persist the report;
3. apply the data set's policy: failing rows (or the whole batch) go to
   quarantine with their reasons, sensitive columns encrypted;
4. store the accepted rows as a new dataset version with their profile;
5. advance the watermark only once every extracted row is stored somewhere
   (a version or quarantine), so a crash in between re-reads, never loses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from conveyor.checks.persist import save_report
from conveyor.data.crypto import Keyring, decrypt_cells, encrypt_cells
from conveyor.data.events import DATA_EXTRACTED, DATA_QUARANTINED, DATA_READ, DATA_VALIDATED
from conveyor.data.frames import to_arrow
from conveyor.data.versions import DatasetRepository, DatasetVersion
from conveyor.errors import GateFailedError, InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.artifacts.store import ArtifactStore
    from conveyor.checks.result import Report
    from conveyor.config import ProjectSpec
    from conveyor.data.forget import ForgetResult
    from conveyor.data.quarantine import QuarantineBatch, QuarantineRepository
    from conveyor.data.settings import DatasetSpec
    from conveyor.events.log import EventLog
    from conveyor.project import Project
    from conveyor.store.database import MetadataStore

__all__ = ["DataLayer", "IngestResult"]

Policy = Literal["fail", "quarantine", "warn"]
REASON_COLUMN = "_quarantine_reason"
#: Profile facts kept for a sensitive column: none of them shows a value.
_SAFE_PROFILE_KEYS = {"type", "count", "nulls", "null_fraction", "distinct"}


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one ingest did with every extracted row."""

    dataset: str
    report: Report
    version: DatasetVersion | None
    quarantine: QuarantineBatch | None
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    batch_rejected: bool

    def raise_for_rejection(self) -> IngestResult:
        if self.batch_rejected:
            raise GateFailedError(
                f"the batch for {self.dataset} was rejected ({self.rows_in} rows kept in "
                f"quarantine batch {self.quarantine.id if self.quarantine else '?'}): "
                + ", ".join(c.name for c in self.report.failures),
                report=self.report,
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "version": self.version.to_dict() if self.version else None,
            "report_id": self.report.id,
            "verdict": self.report.verdict,
            "quarantine_batch": self.quarantine.id if self.quarantine else None,
            "rows_in": self.rows_in,
            "rows_accepted": self.rows_accepted,
            "rows_quarantined": self.rows_quarantined,
            "batch_rejected": self.batch_rejected,
        }


class DataLayer:
    """Data sets of one project: ingest, versions, quarantine, drift, forget."""

    def __init__(
        self,
        spec: ProjectSpec,
        store: MetadataStore,
        artifacts: ArtifactStore,
        events: EventLog,
        keyring: Keyring | None = None,
    ) -> None:
        self.spec = spec
        self.store = store
        self.artifacts = artifacts
        self.events = events
        self.keyring = keyring
        self.versions = DatasetRepository(store, artifacts, events=events, keyring=keyring)

    @classmethod
    def for_project(cls, project: Project) -> DataLayer:
        """The data layer over a project's backends and its keyring (``project.data``)."""
        from conveyor.data.crypto import Keyring

        return cls(
            project.spec,
            project.store,
            project.artifacts,
            project.events,
            Keyring.from_spec(project.spec),
        )

    @property
    def quarantine(self) -> QuarantineRepository:
        from conveyor.data.quarantine import QuarantineRepository

        return QuarantineRepository(self.store, self.artifacts)

    def dataset_spec(self, name: str) -> DatasetSpec:
        from conveyor.data.settings import DatasetSpec, datasets_of

        return datasets_of(self.spec).get(name) or DatasetSpec()

    # -- ingest -------------------------------------------------------------------

    def ingest(
        self,
        dataset: str,
        data: Any = None,
        *,
        expectations: Sequence[Any] | None = None,
        policy: Policy | None = None,
        mode: Literal["replace", "append"] = "append",
        run_id: str | None = None,
        actor: str | None = None,
        now: datetime | None = None,
        source_description: dict[str, Any] | None = None,
    ) -> IngestResult:
        """Validate a batch (``data``, or the next extract of the source) and store it."""
        spec = self.dataset_spec(dataset)
        commit_watermark = None
        if data is not None:
            table = to_arrow(data)
            source = source_description or {"kind": "frame", "rows": table.num_rows}
        else:
            table, source, commit_watermark = self._extract(dataset, spec)
        self.events.record(
            DATA_EXTRACTED,
            subject=dataset,
            actor=actor,
            payload={"rows": table.num_rows, "source": source, "run_id": run_id},
        )

        from conveyor.data.quarantine import apply_policy
        from conveyor.data.validation import parse_expectations, validate

        checks = (
            list(expectations)
            if expectations is not None
            else parse_expectations(spec.expectations, where=f"datasets.{dataset}.expectations")
        )
        result = validate(
            table,
            checks,
            subject=f"dataset:{dataset}",
            now=now,
            accepted_schema=self.versions.accepted_schema(dataset),
        )
        decision = apply_policy(result, policy or spec.on_failure)
        report = result.report
        save_report(self.store, report, run_id=run_id)
        self.events.record(
            DATA_VALIDATED,
            subject=dataset,
            actor=actor,
            payload={
                "report_id": report.id,
                "verdict": report.verdict,
                "failed": [c.name for c in report.failures],
                "failed_rows": result.failed_rows,
                "run_id": run_id,
            },
        )

        batch = None
        if decision.quarantined is not None and decision.quarantined.num_rows:
            batch = self._quarantine(dataset, decision.quarantined, spec, source, run_id, actor)

        version = None
        accepted = decision.accepted
        if accepted is not None and accepted.num_rows and not decision.batch_rejected:
            accepted = accepted.drop_columns(
                [c for c in (REASON_COLUMN,) if c in accepted.column_names]
            )
            version = self.versions.commit(
                dataset,
                accepted,
                mode=mode,
                # The batch's validation report, so gates can judge the data a model trained on.
                source={**source, "validation_report": report.id},
                run_id=run_id,
                profile=self.profile(accepted, spec.sensitive),
                sensitive=spec.sensitive,
                actor=actor,
            )
        if commit_watermark is not None:
            commit_watermark()  # every extracted row is now in a version or in quarantine
        rows_quarantined = batch.row_count if batch is not None else 0
        return IngestResult(
            dataset=dataset,
            report=report,
            version=version,
            quarantine=batch,
            rows_in=table.num_rows,
            rows_accepted=accepted.num_rows if version is not None and accepted is not None else 0,
            rows_quarantined=rows_quarantined,
            batch_rejected=decision.batch_rejected,
        )

    def _extract(self, dataset: str, spec: DatasetSpec) -> tuple[pa.Table, dict[str, Any], Any]:
        from conveyor.data.sources import source_from_spec
        from conveyor.data.sources.watermarks import incremental

        if spec.source is None:
            raise InvalidInputError(
                f"data set {dataset!r} has no source in {self.spec.where(f'datasets.{dataset}')}: "
                "add one, or pass the data to ingest",
                field=f"datasets.{dataset}.source",
            )
        source = source_from_spec(
            spec.source, root=self.spec.root, where=f"datasets.{dataset}.source", name=dataset
        )
        if getattr(source, "watermark_column", None):
            extract, commit = incremental(source, self.store)
            return extract.table, extract.source, commit
        extract = source.read()
        return extract.table, extract.source, None

    def _quarantine(
        self,
        dataset: str,
        rows: pa.Table,
        spec: DatasetSpec,
        source: dict[str, Any],
        run_id: str | None,
        actor: str | None,
    ) -> QuarantineBatch:
        encryption = None
        sensitive = [c for c in spec.sensitive if c in rows.column_names]
        if sensitive:
            keyring = self._keyring(dataset)
            rows = encrypt_cells(rows, sensitive, keyring)
            encryption = {"columns": sensitive, "key_id": keyring.current, "scheme": "cells"}
        batch = self.quarantine.put(
            dataset, rows, source=source, run_id=run_id, encryption=encryption
        )
        self.events.record(
            DATA_QUARANTINED,
            subject=dataset,
            actor=actor,
            payload={
                "batch_id": batch.id,
                "rows": batch.row_count,
                "reasons": batch.reasons,
                "run_id": run_id,
            },
        )
        return batch

    def _keyring(self, dataset: str) -> Keyring:
        from conveyor.data.crypto import require_keyring
        from conveyor.data.settings import encryption_of

        return require_keyring(
            self.keyring, f"data set {dataset!r}", encryption_of(self.spec).key_env
        )

    # -- quarantine replay ----------------------------------------------------------

    def quarantined_rows(self, batch_id: str, *, reveal: bool = False) -> pa.Table:
        """A batch's rows; sensitive columns masked unless ``reveal`` (an audited read)."""
        from conveyor.data.crypto import mask_table

        batch = self.quarantine.get(batch_id)
        rows = self.quarantine.rows(batch_id)
        encrypted = list((batch.encryption or {}).get("columns", []))
        if not encrypted:
            return rows
        if not reveal:
            return mask_table(rows, encrypted)
        self.events.record(
            DATA_READ,
            subject=batch.dataset,
            payload={"quarantine_batch": batch_id, "rows": rows.num_rows, "decrypted": encrypted},
        )
        return decrypt_cells(rows, encrypted, self._keyring(batch.dataset))

    def replay(self, batch_id: str, *, actor: str | None = None) -> IngestResult:
        """Validate a quarantined batch again (after fixing the data or the expectations)."""
        batch = self.quarantine.get(batch_id)
        if batch.status != "pending":
            raise InvalidInputError(
                f"quarantine batch {batch_id} is {batch.status}, not pending", field="batch"
            )
        rows = self.quarantined_rows(batch_id, reveal=True).drop_columns([REASON_COLUMN])
        result = self.ingest(
            batch.dataset,
            rows,
            actor=actor,
            source_description={"kind": "quarantine", "batch": batch_id},
        )
        self.quarantine.mark_replayed(batch_id, result.version.id if result.version else None)
        return result

    # -- profiling, drift, forget -------------------------------------------------------

    def profile(self, table: pa.Table, sensitive: Sequence[str] = ()) -> dict[str, Any]:
        """The profile stored with a version; sensitive columns keep counts only."""
        from conveyor.data.profile import profile

        facts = profile(table)
        columns = facts.get("columns", {})
        for name in sensitive:
            if isinstance(columns, dict) and name in columns:
                columns[name] = {k: v for k, v in columns[name].items() if k in _SAFE_PROFILE_KEYS}
        return facts

    def forget(self, column: str, value: Any, *, actor: str | None = None) -> ForgetResult:
        from conveyor.data.forget import forget

        return forget(
            self.versions,
            self.events,
            column,
            value,
            actor=actor,
            profile=lambda table, sensitive: self.profile(table, sensitive),
        )
