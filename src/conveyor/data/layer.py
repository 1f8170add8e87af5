"""The data layer of a project: ingest with validation and quarantine, versions, replay, forget.

``Project.data`` returns one of these; the CLI (``conveyor data ...``) and
pipelines call it. Ingesting a batch is one pass through the same steps,
each recorded as an event:

0. refuse what would go wrong quietly, before anything is stored: a data set
   not declared in ``conveyor.yaml`` (unless ``new=True``), a batch whose
   content hash is already in a version (unless ``force=True``), an
   expectation naming a column the data never had (a spec mistake, not bad
   rows);
1. extract from the data set's source (incrementally past its watermark), or
   take a frame handed in;
2. validate against the expectations of ``conveyor.yaml`` (plus ``unique``
   and ``not_null`` on the declared ``key``) and the last accepted schema;
   ``unique`` counts the keys of the rows the batch joins, so it holds for
   the whole resulting version; persist the report;
3. apply the data set's policy: failing rows (or the whole batch) go to
   quarantine with their reasons, sensitive columns encrypted;
4. store the accepted rows as a new dataset version with their profile, by
   the data set's ``mode``: ``append`` (the previous rows plus these),
   ``replace`` (only these) or ``upsert`` (these replace the rows sharing
   their key);
5. advance the watermark only once every extracted row is stored somewhere
   (a version or quarantine), so a crash in between re-reads, never loses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from conveyor.checks.persist import save_report
from conveyor.data.crypto import Keyring, decrypt_cells, encrypt_cells
from conveyor.data.events import DATA_EXTRACTED, DATA_QUARANTINED, DATA_READ, DATA_VALIDATED
from conveyor.data.frames import to_arrow
from conveyor.data.versions import DatasetRepository, DatasetVersion, content_hash, key_of
from conveyor.errors import ConfigError, GateFailedError, InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.artifacts.store import ArtifactStore
    from conveyor.checks.result import Report
    from conveyor.config import ProjectSpec
    from conveyor.data.drift import DriftResult
    from conveyor.data.forget import ForgetResult
    from conveyor.data.quarantine import QuarantineBatch, QuarantineRepository
    from conveyor.data.settings import DatasetSpec
    from conveyor.data.validation import Expectation
    from conveyor.events.log import EventLog
    from conveyor.project import Project
    from conveyor.store.database import MetadataStore

__all__ = ["DataLayer", "DriftComparison", "IngestResult"]

Policy = Literal["fail", "quarantine", "warn"]
Mode = Literal["append", "replace", "upsert"]
Compare = Literal["batch", "version"]
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
    mode: Mode = "append"
    key: tuple[str, ...] = ()
    batch_hash: str | None = None
    rows_replaced: int = 0
    """Upsert: stored rows the batch replaced (their key came again)."""
    new_dataset: dict[str, Any] | None = None
    """The inferred schema, when this batch made an ad-hoc data set (``new=True``)."""

    @property
    def rows_total(self) -> int:
        """Rows in the version made (0 when none was)."""
        return self.version.row_count if self.version is not None else 0

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
            "rows_total": self.rows_total,
            "rows_replaced": self.rows_replaced,
            "mode": self.mode,
            "key": list(self.key),
            "batch_hash": self.batch_hash,
            "batch_rejected": self.batch_rejected,
            "new_dataset": self.new_dataset,
        }


@dataclass(frozen=True, slots=True)
class DriftComparison:
    """A drift check between two versions, and which rows of each it compared."""

    result: DriftResult
    report: Report
    reference: DatasetVersion
    current: DatasetVersion
    compared: dict[str, Any]
    """``{"reference": {"ref", "rows", "scope"}, "current": {...}}``; scope is ``version``
    (every row) or ``batch`` (only the rows the version's own batch added)."""
    important: dict[str, Any] = field(default_factory=dict)
    """``{"columns": [...], "source": "argument" | "model" | "spec" | None}``: the columns
    whose drift alone fails the report, and where they came from."""

    def describe(self) -> str:
        ref, cur = self.compared["reference"], self.compared["current"]

        def one(side: dict[str, Any]) -> str:
            what = "batch of " if side["scope"] == "batch" else ""
            return f"{side['rows']:,} rows ({what}{side['ref']})"

        text = f"compared {one(ref)} with {one(cur)}"
        columns = self.important.get("columns") or []
        if columns:
            text += f"; important columns ({self.important.get('source')}): {', '.join(columns)}"
        return text


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

    def require_known(self, name: str, *, new: bool | None = False) -> bool:
        """Whether ``name`` is a new ad-hoc data set; UndeclaredDatasetError for a name
        neither declared in ``conveyor.yaml`` nor ever written, unless ``new``.

        ``new=None`` (the Python API's default) refuses only when the project
        declares data sets: a name close to none of them in a project that
        declares some is still refused; a project without ``datasets:`` ingests
        ad hoc, as before.
        """
        from conveyor.data.errors import UndeclaredDatasetError
        from conveyor.data.settings import closest_hint, datasets_of

        declared = datasets_of(self.spec)
        if name in declared or self.versions.exists(name):
            return False
        if new or (new is None and not declared):
            return True
        flag = "new=True" if new is None else "--new"
        raise UndeclaredDatasetError(
            f"data set {name!r} is not declared in {self.spec.spec_file}"
            f"{closest_hint(name, declared)}; declare it, or pass {flag} for an ad-hoc one",
            dataset=name,
        )

    def expectations(
        self,
        dataset: str,
        columns: Sequence[str],
        *,
        spec: DatasetSpec | None = None,
        expectations: Sequence[Any] | None = None,
    ) -> list[Expectation]:
        """The checks a batch of ``dataset`` with ``columns`` must pass: the declared
        ones (or ``expectations``) plus ``not_null`` and ``unique`` on its key.

        ExpectationColumnError (a ConfigError) for an expectation or key naming a
        column neither the batch nor the last accepted version has: a mistake in
        the spec, raised before a row is judged. A column the accepted version
        had and the batch lacks is a data problem: the schema-change check
        rejects that batch into quarantine.
        """
        from conveyor.data.validation import (
            Custom,
            NotNull,
            Unique,
            parse_expectations,
        )

        spec = spec or self.dataset_spec(dataset)
        where = f"datasets.{dataset}.expectations"
        checks = (
            parse_expectations(list(expectations))
            if expectations is not None
            else parse_expectations(spec.expectations, where=where)
        )
        accepted = self.versions.accepted_schema(dataset) or {"columns": []}
        known = list(columns) + [c["name"] for c in accepted["columns"] if c["name"] not in columns]
        for index, check in enumerate(checks):
            if isinstance(check, Custom):
                continue  # a custom check's columns are its own business
            for column in check.columns_used:
                if column not in known:
                    raise _unknown_column(column, known, f"{where}[{index}] ({check.name})")
        for column in spec.key:
            if column not in known:
                raise _unknown_column(column, known, f"datasets.{dataset}.key")
        if spec.key:
            have = {(type(c).__name__, c.columns_used) for c in checks}
            for column in spec.key:
                if ("NotNull", (column,)) not in have:
                    checks.append(NotNull(column=column))
            if ("Unique", tuple(spec.key)) not in have:
                unique = (
                    Unique(column=spec.key[0])
                    if len(spec.key) == 1
                    else Unique(columns=list(spec.key))
                )
                checks.append(unique)
        return checks

    def check(
        self,
        dataset: str,
        data: Any,
        *,
        mode: Mode | None = None,
        now: datetime | None = None,
        split: bool = False,
    ) -> Any:
        """Validate a batch as :meth:`ingest` would and store nothing (``data validate``)."""
        from conveyor.data.validation import validate

        self.require_known(dataset, new=False)
        spec = self.dataset_spec(dataset)
        table = to_arrow(data)
        checks = self.expectations(dataset, table.column_names, spec=spec)
        return validate(
            table,
            checks,
            subject=f"dataset:{dataset}",
            now=now,
            accepted_schema=self.versions.accepted_schema(dataset),
            split=split,
            existing=self._joined_rows(dataset, table, checks, mode or spec.mode, spec.key),
        )

    # -- ingest -------------------------------------------------------------------

    def ingest(
        self,
        dataset: str,
        data: Any = None,
        *,
        expectations: Sequence[Any] | None = None,
        policy: Policy | None = None,
        mode: Mode | None = None,
        new: bool | None = None,
        force: bool = False,
        run_id: str | None = None,
        actor: str | None = None,
        now: datetime | None = None,
        source_description: dict[str, Any] | None = None,
    ) -> IngestResult:
        """Validate a batch (``data``, or the next extract of the source) and store it.

        ``mode`` overrides the data set's (``append``, ``replace``, ``upsert`` by
        its ``key``). ``new=True`` allows a name not declared in ``conveyor.yaml``
        (see :meth:`require_known` for the default). ``force=True`` ingests a
        batch whose content hash a version already holds
        (BatchAlreadyIngestedError otherwise).
        """
        spec = self.dataset_spec(dataset)
        chosen = _mode(mode or spec.mode, spec.key, dataset)
        is_new = self.require_known(dataset, new=new)
        commit_watermark = None
        if data is not None:
            table = to_arrow(data)
            source = source_description or {"kind": "frame", "rows": table.num_rows}
        else:
            table, source, commit_watermark = self._extract(dataset, spec)
        batch_hash = content_hash(table) if table.num_rows else None
        if batch_hash is not None and not force:
            self._refuse_repeat(dataset, batch_hash)
        checks = self.expectations(
            dataset, table.column_names, spec=spec, expectations=expectations
        )
        self.events.record(
            DATA_EXTRACTED,
            subject=dataset,
            actor=actor,
            payload={"rows": table.num_rows, "source": source, "run_id": run_id},
        )

        from conveyor.data.quarantine import apply_policy
        from conveyor.data.validation import validate

        result = validate(
            table,
            checks,
            subject=f"dataset:{dataset}",
            now=now,
            accepted_schema=self.versions.accepted_schema(dataset),
            existing=self._joined_rows(dataset, table, checks, chosen, spec.key),
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
                "quality": batch_quality(table, checks, result, now),
            },
        )

        batch = None
        if decision.quarantined is not None and decision.quarantined.num_rows:
            batch = self._quarantine(dataset, decision.quarantined, spec, source, run_id, actor)

        version = None
        replaced = 0
        accepted = decision.accepted
        if accepted is not None and accepted.num_rows and not decision.batch_rejected:
            accepted = accepted.drop_columns(
                [c for c in (REASON_COLUMN,) if c in accepted.column_names]
            )
            previous = self.versions.latest(dataset) if chosen == "upsert" else None
            version = self.versions.commit(
                dataset,
                accepted,
                mode=chosen,
                key=spec.key,
                batch_hash=batch_hash,
                # The batch's validation report, so gates can judge the data a model trained on.
                source={**source, "validation_report": report.id},
                run_id=run_id,
                profile=self.profile(accepted, spec.sensitive),
                sensitive=spec.sensitive,
                actor=actor,
            )
            if previous is not None:
                replaced = previous.row_count + accepted.num_rows - version.row_count
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
            mode=chosen,
            key=tuple(spec.key),
            batch_hash=batch_hash,
            rows_replaced=replaced,
            new_dataset=result.schema if is_new else None,
        )

    def _refuse_repeat(self, dataset: str, batch_hash: str) -> None:
        from conveyor.data.errors import BatchAlreadyIngestedError

        earlier = self.versions.find_batch(dataset, batch_hash)
        if earlier is not None:
            raise BatchAlreadyIngestedError(
                f"this batch was already ingested into {dataset} as {earlier.ref} "
                f"(same content hash {batch_hash[:19]}...); pass --force (force=True) to "
                "ingest it again",
                dataset=dataset,
                version=earlier.ref,
                batch_hash=batch_hash,
            )

    def _joined_rows(
        self,
        dataset: str,
        batch: pa.Table,
        checks: Sequence[Any],
        mode: Mode,
        key: Sequence[str],
    ) -> pa.Table | None:
        """The stored rows the batch will join, narrowed to the columns ``unique`` checks
        read: the latest version's (append), less those whose key the batch brings
        again (upsert); none when the batch replaces everything."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from conveyor.data.validation import Unique

        columns = sorted({c for e in checks if isinstance(e, Unique) for c in e.keys})
        if mode == "replace" or not columns:
            return None
        latest = self.versions.latest(dataset)
        if latest is None:
            return None
        stored = {c["name"] for c in latest.schema["columns"]}
        columns = [c for c in columns if c in stored]
        wanted = list(dict.fromkeys([*columns, *(key if mode == "upsert" else ())]))
        if not columns or not set(wanted) <= stored:
            return None
        tables = [self.versions.read_columns(p, wanted) for p in self.versions.parts(latest)]
        rows = pa.concat_tables(tables) if tables else None
        if rows is None:
            return None
        if mode == "upsert" and all(k in batch.column_names for k in key):
            again = pc.fill_null(pc.is_in(key_of(rows, key), value_set=key_of(batch, key)), False)
            rows = rows.filter(pc.invert(again))
        return rows.select(columns)

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
        spec = self.dataset_spec(batch.dataset)
        result = self.ingest(
            batch.dataset,
            rows,
            actor=actor,
            # The rows belong to a batch already ingested: they join the latest version,
            # never replace it (and an upsert stays one).
            mode="upsert" if spec.mode == "upsert" else "append",
            new=True,
            force=True,
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

    def drift(
        self,
        reference: DatasetVersion | str,
        current: DatasetVersion | str,
        *,
        compare: Compare = "batch",
        actor: str | None = None,
        important: Sequence[str] | None = None,
        feature_importance: Mapping[str, float] | None = None,
    ) -> DriftComparison:
        """Drift of ``current`` against ``reference``, recorded (report, ``data.drift``,
        and ``drift.detected`` when it failed).

        ``compare="batch"`` (the default) compares the whole reference with only
        the rows ``current``'s own batch added: in an appended data set the
        newest rows are what may have drifted, and mixing them with every
        earlier batch dilutes the shift. ``"version"`` compares whole versions.
        Sensitive and key columns are not compared.

        The report fails on dataset drift and on any drifted **important**
        column: ``important`` if given; else, for a comparison made for a
        model, its most important features among the compared columns
        (``feature_importance``, ``{feature: weight}``, e.g. from
        :func:`conveyor.data.drift.importance.registered_importances`); else
        the data set's ``drift.important`` in the spec.
        """
        from conveyor.checks.persist import save_report
        from conveyor.data.drift import DriftDetector
        from conveyor.data.events import DATA_DRIFT, DRIFT_DETECTED

        if compare not in ("batch", "version"):
            raise InvalidInputError(
                f"compare must be 'batch' or 'version', got {compare!r}", field="compare"
            )
        repo = self.versions
        ref = repo.resolve(reference) if isinstance(reference, str) else reference
        cur = repo.resolve(current) if isinstance(current, str) else current
        spec = self.dataset_spec(ref.dataset)
        # Sensitive columns are never compared; a key identifies rows, and new rows bring
        # new keys: its "drift" is by construction, not a change in the data.
        skipped = set(spec.sensitive) | set(spec.key)
        columns = [c["name"] for c in ref.schema["columns"] if c["name"] not in skipped]
        reference_rows = repo.read(ref, actor=actor, purpose="drift")
        current_rows = repo.read(cur, actor=actor, purpose="drift", batch=compare == "batch")
        only_batch = compare == "batch" and current_rows.num_rows < cur.row_count
        scope = "batch" if only_batch else "version"
        compared = {
            "reference": {"ref": ref.ref, "rows": reference_rows.num_rows, "scope": "version"},
            "current": {"ref": cur.ref, "rows": current_rows.num_rows, "scope": scope},
        }
        chosen = _important_columns(spec, columns, important, feature_importance)
        detector = DriftDetector(columns=columns, important=chosen["columns"])
        result = detector.fit(reference_rows).score(current_rows)
        report = result.to_report(f"dataset:{ref.dataset}")
        report.subject_version = f"{ref.number}->{cur.number}"
        save_report(self.store, report)
        facts = {"reference": ref.id, "current": cur.id, "report_id": report.id}
        self.events.record(
            DATA_DRIFT,
            subject=ref.dataset,
            subject_version=str(cur.number),
            actor=actor,
            payload={**facts, "verdict": report.verdict, "compared": compared},
        )
        if not report.passed:
            # The alert that retraining can listen for (models.*.retrain.on_events).
            self.events.record(
                DRIFT_DETECTED,
                subject=ref.dataset,
                subject_version=str(cur.number),
                actor=actor,
                payload={
                    **facts,
                    "drifted": [c.name for c in report.failures],
                    "compared": compared,
                },
            )
        return DriftComparison(result, report, ref, cur, compared, chosen)

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


def _important_columns(
    spec: DatasetSpec,
    columns: Sequence[str],
    given: Sequence[str] | None,
    importance: Mapping[str, float] | None,
) -> dict[str, Any]:
    """The columns whose drift alone fails a drift report, and where they came from."""
    from conveyor.data.drift.importance import important_features

    if given is not None:
        if isinstance(given, str):
            given = [given]
        source, chosen = "argument", list(dict.fromkeys(given))
    elif importance is not None:
        source, chosen = "model", important_features(importance, among=columns)
    elif spec.drift.important:
        source, chosen = "spec", list(spec.drift.important)
    else:
        return {"columns": [], "source": None}
    unknown = [c for c in chosen if c not in columns]
    if unknown:
        where = "datasets.<name>.drift.important" if source == "spec" else "important"
        raise InvalidInputError(
            f"{where}: column(s) {', '.join(map(repr, unknown))} are not compared "
            f"(key and sensitive columns never are); compared: {', '.join(columns)}",
            field="important",
            columns=unknown,
        )
    return {"columns": chosen, "source": source}


def _mode(mode: Any, key: Sequence[str], dataset: str) -> Mode:
    from conveyor.data.settings import MODES

    if mode not in MODES:
        raise InvalidInputError(
            f"mode {mode!r}: expected one of {', '.join(MODES)}", field="mode", allowed=MODES
        )
    if mode == "upsert" and not key:
        raise ConfigError(
            f"data set {dataset!r} has no key: upsert needs one "
            f"(datasets.{dataset}.key: [column, ...])",
            field=f"datasets.{dataset}.key",
        )
    chosen: Mode = mode
    return chosen


def _unknown_column(column: str, known: Sequence[str], where: str) -> ConfigError:
    import difflib

    from conveyor.data.errors import ExpectationColumnError

    close = difflib.get_close_matches(column, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ExpectationColumnError(
        f"{where}: column {column!r} is not in the data{hint} (columns: {', '.join(known)})",
        field=where,
        column=column,
        columns=list(known),
        suggestion=close[0] if close else None,
    )


def batch_quality(
    table: pa.Table, checks: Sequence[Any], result: Any, now: datetime | None = None
) -> dict[str, Any]:
    """What data-quality monitors read from an ingested batch (``data.validated``'s
    ``quality``): rows, nulls per column, rows failing each range check (``between``),
    the schema change against the last accepted version, and the newest row's time when
    a ``freshness`` expectation names the time column (the lag is measured from it)."""
    from datetime import UTC, timedelta

    from conveyor.data.validation.expectations import Between, Freshness

    at = now or datetime.now(UTC)  # what validate measured the lag against

    rows = int(result.row_count)
    observed = {c.name: c.observed for c in result.report.checks}
    ranges = {}
    newest = None
    for check in checks:
        found = observed.get(check.name)
        if isinstance(check, Between) and isinstance(found, int | float):
            ranges[check.name] = round(float(found) * rows)
        elif isinstance(check, Freshness) and isinstance(found, int | float) and newest is None:
            newest = (at - timedelta(seconds=float(found))).isoformat()
    change = result.schema_change
    return {
        "rows": rows,
        "columns": table.num_columns,
        "nulls": {name: int(table.column(name).null_count) for name in table.column_names},
        "out_of_range": ranges,
        "schema_changed": bool(change is not None and change.changed),
        "schema_change": change.to_dict() if change is not None and change.changed else None,
        "newest_row": newest,
    }
