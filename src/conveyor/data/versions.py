"""Dataset versions: immutable, numbered snapshots with their schema, source and profile.

A version's snapshot is a *manifest* (a JSON artifact) listing *parts*, each
a Parquet artifact of one batch; sensitive columns of a part are a separate
encrypted artifact (:mod:`conveyor.data.crypto`). Appending a batch makes a
new version that reuses the previous parts and adds one: nothing is copied,
and the content-addressed artifact store keeps each part once however many
versions list it. Deleting a data subject (GDPR) rewrites only the parts
that hold it.

The batch that made a version is always its manifest's last part (deletion
rewrites parts in place, never reorders them): drift between versions of an
appended data set compares that batch, not the history it joins. An upsert
rewrites only the earlier parts holding a key the batch brings again.

The content hash of a version is the sha256 of its parts' content hashes,
each the sha256 of the part's plaintext rows (an Arrow IPC stream without
schema metadata): equal data gives an equal hash whatever the encryption.

Numbers are allocated per data set under optimistic concurrency (the
``datasets`` row's version column): two writers committing at once get
numbers n and n+1, never the same one.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from conveyor.data.crypto import Keyring, decrypt_columns, encrypt_columns
from conveyor.data.events import DATA_READ, DATA_VERSION_CREATED
from conveyor.data.frames import FrameKind, from_arrow, to_arrow
from conveyor.data.schema import schema_of
from conveyor.errors import ConcurrentUpdateError, InvalidInputError, NotFoundError
from conveyor.store.paging import Page
from conveyor.store.retry import retry_on_conflict

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.artifacts.store import ArtifactStore
    from conveyor.data.tables import DatasetVersionRecord
    from conveyor.events.log import EventLog
    from conveyor.store.database import MetadataStore

__all__ = ["DatasetRepository", "DatasetVersion", "Part", "content_hash", "key_of"]

MANIFEST_FORMAT = "conveyor.snapshot/1"


@dataclass(frozen=True, slots=True)
class Part:
    """One stored batch of a version."""

    digest: str
    rows: int
    content_hash: str
    secret_digest: str | None = None
    encryption: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "rows": self.rows,
            "content_hash": self.content_hash,
            "secret_digest": self.secret_digest,
            "encryption": self.encryption,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Part:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class DatasetVersion:
    """A snapshot of a version's record (not the data: see :meth:`DatasetRepository.read`)."""

    id: str
    dataset: str
    number: int
    content_hash: str
    row_count: int
    schema: dict[str, Any]
    source: dict[str, Any]
    profile: dict[str, Any] | None
    snapshot_digest: str
    snapshot_size: int
    encryption: dict[str, Any] | None
    run_id: str | None
    created_at: datetime
    rewritten_at: datetime | None
    version: int = 1
    mode: str | None = None
    """append, replace or upsert; None for a version made before modes were recorded."""
    batch_rows: int | None = None
    """Rows the version's batch added (its last part); the rest came from the previous one."""
    batch_hash: str | None = None
    """Content hash of the batch as it came in (accepted and quarantined rows together)."""
    parts: tuple[Part, ...] = field(default=(), compare=False)

    @property
    def ref(self) -> str:
        return f"{self.dataset}@{self.number}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ref": self.ref,
            "dataset": self.dataset,
            "number": self.number,
            "content_hash": self.content_hash,
            "row_count": self.row_count,
            "mode": self.mode,
            "batch_rows": self.batch_rows,
            "batch_hash": self.batch_hash,
            "schema": self.schema,
            "source": self.source,
            "snapshot_digest": self.snapshot_digest,
            "encrypted_columns": (self.encryption or {}).get("columns", []),
            "run_id": self.run_id,
            "created_at": self.created_at.isoformat(),
            "rewritten_at": self.rewritten_at.isoformat() if self.rewritten_at else None,
        }


def content_hash(table: pa.Table) -> str:
    """sha256 of the rows of ``table`` (schema metadata ignored), as ``sha256:<hex>``."""
    import pyarrow as pa

    table = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return "sha256:" + hashlib.sha256(sink.getvalue()).hexdigest()


def key_of(table: pa.Table, key: Sequence[str]) -> pa.Array:
    """One value per row identifying it by ``key`` (its columns joined when several)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(key) == 1:
        return table.column(key[0]).combine_chunks()
    columns = [pc.cast(table.column(c), pa.string()).combine_chunks() for c in key]
    # Unit separator: a byte no sane key value holds, so ("a", "bc") != ("ab", "c").
    joined: pa.Array = pc.binary_join_element_wise(*columns, "\x1f")
    return joined


class DatasetRepository:
    """Commit, find, read and list dataset versions."""

    def __init__(
        self,
        store: MetadataStore,
        artifacts: ArtifactStore,
        *,
        events: EventLog | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.events = events
        self.keyring = keyring

    # -- writing ----------------------------------------------------------------

    def commit(
        self,
        dataset: str,
        data: Any,
        *,
        mode: Literal["replace", "append", "upsert"] = "replace",
        key: Sequence[str] = (),
        source: dict[str, Any] | None = None,
        profile: dict[str, Any] | None = None,
        run_id: str | None = None,
        sensitive: Sequence[str] = (),
        actor: str | None = None,
        batch_hash: str | None = None,
    ) -> DatasetVersion:
        """Store ``data`` as the next version of ``dataset``.

        ``mode="append"`` makes a version holding the previous version's rows
        plus these (the schemas must match); ``"replace"`` holds only these;
        ``"upsert"`` holds these plus the previous rows whose ``key`` none of
        these has. ``batch_hash`` records the batch the rows came from (see
        :meth:`find_batch`).
        """
        if not dataset or len(dataset) > 200:
            raise InvalidInputError(
                "a data set needs a name of 1 to 200 characters", field="dataset"
            )
        if mode not in ("replace", "append", "upsert"):
            raise InvalidInputError(
                f"mode must be 'replace', 'append' or 'upsert', got {mode!r}", field="mode"
            )
        table = to_arrow(data).replace_schema_metadata(None)
        key = list(key)
        if mode == "upsert" and not key:
            raise InvalidInputError("mode 'upsert' needs the key columns", field="key")
        absent = [c for c in key if c not in table.column_names]
        if absent:
            raise InvalidInputError(
                f"key column {absent[0]!r} is not in the batch ({', '.join(table.column_names)})",
                field="key",
            )
        schema = schema_of(table)
        parts: builtins.list[Part] = []
        if mode in ("append", "upsert"):
            previous = self.latest(dataset)
            if previous is not None:
                if [c["name"] for c in previous.schema["columns"]] != table.column_names or [
                    c["type"] for c in previous.schema["columns"]
                ] != [c["type"] for c in schema["columns"]]:
                    raise InvalidInputError(
                        f"cannot append to {previous.ref}: its columns are "
                        f"{_columns(previous.schema)}, the batch's {_columns(schema)}",
                        field="data",
                    )
                kept = self.parts(previous)
                if mode == "upsert":
                    kept = self._without_keys(kept, key_of(table, key), key, sensitive)
                parts.extend(kept)
        parts.append(self._write_part(table, sensitive))  # the batch: always the last part
        manifest = {"format": MANIFEST_FORMAT, "parts": [p.to_dict() for p in parts]}
        manifest_ref = self.artifacts.put_json(manifest)
        version = self._insert(
            dataset,
            parts=parts,
            schema=schema,
            source=source or {},
            profile=profile,
            snapshot=(manifest_ref.digest, manifest_ref.size),
            run_id=run_id,
            batch=(mode, table.num_rows, batch_hash),
        )
        if self.events is not None:
            self.events.record(
                DATA_VERSION_CREATED,
                subject=dataset,
                subject_version=str(version.number),
                actor=actor,
                payload={
                    "version_id": version.id,
                    "rows": version.row_count,
                    "batch_rows": table.num_rows,
                    "content_hash": version.content_hash,
                    "mode": mode,
                    "run_id": run_id,
                },
            )
        return version

    def _without_keys(
        self,
        parts: Sequence[Part],
        batch_keys: pa.Array,
        key: Sequence[str],
        sensitive: Sequence[str],
    ) -> builtins.list[Part]:
        """``parts`` less the rows whose key is in ``batch_keys``; untouched parts are reused."""
        import pyarrow.compute as pc

        kept: builtins.list[Part] = []
        for part in parts:
            mask = pc.fill_null(
                pc.is_in(key_of(self.read_columns(part, key), key), value_set=batch_keys), False
            )
            if not pc.any(mask).as_py():
                kept.append(part)
                continue
            rows = self.read_part(part).filter(pc.invert(mask))
            if rows.num_rows:
                kept.append(self._write_part(rows, sensitive))
        return kept

    def _write_part(self, table: pa.Table, sensitive: Sequence[str]) -> Part:
        import pyarrow.parquet as pq

        digest_of_rows = content_hash(table)
        plain, blob, meta = table, None, None
        if any(c in table.column_names for c in sensitive):
            if self.keyring is None:
                raise InvalidInputError(
                    f"columns {list(sensitive)} are sensitive but no encryption key is "
                    "configured: set $CONVEYOR_DATA_KEY (`conveyor data keygen` makes one)",
                    field="sensitive",
                )
            plain, blob, meta = encrypt_columns(table, sensitive, self.keyring, bind=digest_of_rows)
        buffer = io.BytesIO()
        pq.write_table(plain, buffer, compression="zstd")
        part_ref = self.artifacts.put(
            buffer.getvalue(), media_type="application/vnd.apache.parquet"
        )
        secret_digest = self.artifacts.put(blob).digest if blob is not None else None
        return Part(part_ref.digest, table.num_rows, digest_of_rows, secret_digest, meta)

    def _insert(
        self,
        dataset: str,
        *,
        parts: Sequence[Part],
        schema: dict[str, Any],
        source: dict[str, Any],
        profile: dict[str, Any] | None,
        snapshot: tuple[str, int],
        run_id: str | None,
        batch: tuple[str, int, str | None] | None = None,
    ) -> DatasetVersion:
        from conveyor.data.tables import DatasetRecord, DatasetVersionRecord, LineageRecord
        from conveyor.store.types import json_value, utcnow

        encryption = _encryption_summary(parts)

        def once() -> DatasetVersion:
            with self.store.session() as session:
                record = session.get(DatasetRecord, dataset)
                if record is None:
                    record = DatasetRecord(name=dataset, latest_number=0)
                    session.add(record)
                    session.flush()
                record.latest_number += 1
                record.accepted_schema = schema
                row = DatasetVersionRecord(
                    id=uuid.uuid4().hex,
                    dataset=dataset,
                    number=record.latest_number,
                    content_hash=_combined_hash(parts),
                    row_count=sum(p.rows for p in parts),
                    schema=schema,
                    source=json_value(source, "source"),
                    profile=json_value(profile, "profile") if profile is not None else None,
                    snapshot_digest=snapshot[0],
                    snapshot_size=snapshot[1],
                    encryption=encryption,
                    run_id=run_id,
                    created_at=utcnow(),
                    mode=batch[0] if batch else None,
                    batch_rows=batch[1] if batch else None,
                    batch_hash=batch[2] if batch else None,
                )
                session.add(row)
                if run_id is not None:
                    session.add(
                        LineageRecord(run_id=run_id, dataset_version_id=row.id, role="output")
                    )
                session.flush()
                return replace(_snapshot(row), parts=tuple(parts))

        # Another writer may take the number (or create the data set) first: take the next.
        return retry_on_conflict(once, what=f"committing a version of data set {dataset!r}")

    # -- finding ----------------------------------------------------------------

    def latest(self, dataset: str) -> DatasetVersion | None:
        import sqlalchemy as sa

        from conveyor.data.tables import DatasetVersionRecord as V

        with self.store.read() as session:
            row = session.scalars(
                sa.select(V).where(V.dataset == dataset).order_by(V.number.desc()).limit(1)
            ).first()
            return _snapshot(row) if row is not None else None

    def find_batch(self, dataset: str, batch_hash: str) -> DatasetVersion | None:
        """The earliest version of ``dataset`` made from a batch with this content hash."""
        import sqlalchemy as sa

        from conveyor.data.tables import DatasetVersionRecord as V

        with self.store.read() as session:
            row = session.scalars(
                sa.select(V)
                .where(V.dataset == dataset, V.batch_hash == batch_hash)
                .order_by(V.number)
                .limit(1)
            ).first()
            return _snapshot(row) if row is not None else None

    def exists(self, dataset: str) -> bool:
        """Whether the data set was ever written (a version or a quarantined batch)."""
        from conveyor.data.tables import DatasetRecord

        with self.store.read() as session:
            return session.get(DatasetRecord, dataset) is not None

    def get(self, dataset: str, number: int | None = None) -> DatasetVersion:
        """Version ``number`` of ``dataset`` (the latest when None)."""
        import sqlalchemy as sa

        from conveyor.data.tables import DatasetVersionRecord as V

        if number is None:
            found = self.latest(dataset)
            if found is None:
                raise NotFoundError(f"data set {dataset!r} has no version yet", dataset=dataset)
            return found
        with self.store.read() as session:
            row = session.scalars(
                sa.select(V).where(V.dataset == dataset, V.number == number)
            ).first()
            if row is None:
                raise NotFoundError(
                    f"no version {dataset}@{number}", dataset=dataset, number=number
                )
            return _snapshot(row)

    def by_id(self, version_id: str) -> DatasetVersion:
        from conveyor.data.tables import DatasetVersionRecord as V

        with self.store.read() as session:
            row = session.get(V, version_id)
            if row is None:
                raise NotFoundError(f"no dataset version with id {version_id!r}", id=version_id)
            return _snapshot(row)

    def resolve(self, ref: str) -> DatasetVersion:
        """``name``, ``name@latest``, ``name@3`` or a version id."""
        name, _, number = ref.partition("@")
        if number in ("", "latest"):
            if len(name) == 32 and not number and all(c in "0123456789abcdef" for c in name):
                try:
                    return self.by_id(name)
                except NotFoundError:
                    pass
            return self.get(name)
        if not (number.isascii() and number.isdigit()):
            raise InvalidInputError(
                f"{ref!r}: expected name@NUMBER, name@latest or an id", field="ref"
            )
        return self.get(name, int(number))

    def list(
        self, dataset: str | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> Page[DatasetVersion]:
        """Versions, newest first."""
        import sqlalchemy as sa

        from conveyor.data.tables import DatasetVersionRecord as V
        from conveyor.store.database import page

        stmt = sa.select(V)
        if dataset is not None:
            stmt = stmt.where(V.dataset == dataset)
        return page(
            self.store,
            stmt,
            V.created_at,
            V.id,
            _snapshot,
            limit=limit,
            cursor=cursor,
            listing="dataset versions",
        )

    def all(self, dataset: str | None = None) -> Iterator[DatasetVersion]:
        """Every version (of ``dataset``), newest first, a page at a time."""
        cursor: str | None = None
        while True:
            page = self.list(dataset, limit=500, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def replace_parts(
        self,
        version: DatasetVersion,
        parts: Sequence[Part],
        *,
        profile: dict[str, Any] | Literal[False] | None = False,
    ) -> None:
        """Point ``version`` at new parts (deletion of a subject, key rotation).

        The only change a version ever sees: it keeps its id and number, and
        records when it was rewritten. ``profile=False`` keeps the old profile.
        """
        from conveyor.data.tables import DatasetVersionRecord
        from conveyor.store.types import utcnow

        manifest = self.artifacts.put_json(
            {"format": MANIFEST_FORMAT, "parts": [p.to_dict() for p in parts]}
        )
        with self.store.session() as session:
            row = session.get(DatasetVersionRecord, version.id)
            if row is None:
                raise NotFoundError(f"no dataset version with id {version.id!r}", id=version.id)
            if row.version != version.version:
                raise ConcurrentUpdateError(
                    f"{version.ref} changed since it was read; read it again", id=version.id
                )
            row.snapshot_digest, row.snapshot_size = manifest.digest, manifest.size
            row.content_hash = _combined_hash(parts)
            row.row_count = sum(p.rows for p in parts)
            row.encryption = _encryption_summary(parts)
            if profile is not False:
                row.profile = profile
            row.rewritten_at = utcnow()

    def rotate_part(self, part: Part) -> Part:
        """``part`` with its encrypted columns sealed again under the current key."""
        if part.encryption is None or part.secret_digest is None or self.keyring is None:
            return part
        if part.encryption["key_id"] == self.keyring.current:
            return part
        table = self.read_part(part)
        return self._write_part(table, part.encryption["columns"])

    def datasets(self) -> Sequence[dict[str, Any]]:
        """Every data set with its latest number and when it changed."""
        import sqlalchemy as sa

        from conveyor.data.tables import DatasetRecord

        with self.store.read() as session:
            rows = session.scalars(sa.select(DatasetRecord).order_by(DatasetRecord.name)).all()
            return [
                {"name": r.name, "versions": r.latest_number, "updated_at": r.updated_at}
                for r in rows
            ]

    def accepted_schema(self, dataset: str) -> dict[str, Any] | None:
        from conveyor.data.tables import DatasetRecord

        with self.store.read() as session:
            record = session.get(DatasetRecord, dataset)
            return record.accepted_schema if record is not None else None

    # -- reading ----------------------------------------------------------------

    def parts(self, version: DatasetVersion) -> Sequence[Part]:
        if version.parts:
            return list(version.parts)
        manifest = self.artifacts.get_json(version.snapshot_digest)
        if manifest.get("format") != MANIFEST_FORMAT:
            raise InvalidInputError(
                f"{version.ref}: unknown snapshot format {manifest.get('format')!r}",
                field="snapshot",
            )
        return [Part.from_dict(p) for p in manifest["parts"]]

    def read_part(self, part: Part) -> pa.Table:
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(self.artifacts.get(part.digest)))
        if part.secret_digest is not None and part.encryption is not None:
            if self.keyring is None:
                raise InvalidInputError(
                    f"columns {part.encryption['columns']} are encrypted and no key is "
                    "configured: set $CONVEYOR_DATA_KEY",
                    field="key",
                )
            table = decrypt_columns(
                table,
                self.artifacts.get(part.secret_digest),
                part.encryption,
                self.keyring,
                bind=part.content_hash,
            )
        return table

    def read_columns(self, part: Part, columns: Sequence[str]) -> pa.Table:
        """Only ``columns`` of a part: a narrow Parquet read unless one of them is encrypted."""
        import pyarrow.parquet as pq

        sealed = set((part.encryption or {}).get("columns", [])) if part.secret_digest else set()
        if sealed & set(columns):
            return self.read_part(part).select(list(columns))
        return pq.read_table(io.BytesIO(self.artifacts.get(part.digest)), columns=list(columns))

    def read_batch(self, version: DatasetVersion) -> pa.Table:
        """The rows the version's own batch added (its last part), decrypted; not audited
        here: :meth:`read` with ``batch=True`` is the audited read."""
        import pyarrow as pa

        parts = self.parts(version)
        return self.read_part(parts[-1]) if parts else pa.table({})

    def iter_parts(self, version: DatasetVersion) -> Iterator[pa.Table]:
        for part in self.parts(version):
            yield self.read_part(part)

    def read(
        self,
        version: DatasetVersion | str,
        *,
        kind: FrameKind = "arrow",
        actor: str | None = None,
        purpose: str | None = None,
        batch: bool = False,
    ) -> Any:
        """The version's rows (decrypted), as ``kind``; every read is an audit event.

        ``batch=True`` reads only the rows its own batch added (see :meth:`read_batch`).
        """
        import pyarrow as pa

        found = self.resolve(version) if isinstance(version, str) else version
        if batch:
            table = self.read_batch(found)
        else:
            tables = list(self.iter_parts(found))
            table = pa.concat_tables(tables) if tables else pa.table({})
        if self.events is not None:
            self.events.record(
                DATA_READ,
                subject=found.dataset,
                subject_version=str(found.number),
                actor=actor,
                payload={
                    "version_id": found.id,
                    "rows": table.num_rows,
                    "purpose": purpose,
                    "decrypted": (found.encryption or {}).get("columns", []),
                },
            )
        return from_arrow(table, kind)


def _columns(schema: dict[str, Any]) -> str:
    return ", ".join(f"{c['name']}:{c['type']}" for c in schema["columns"])


def _combined_hash(parts: Sequence[Part]) -> str:
    if len(parts) == 1:
        return parts[0].content_hash
    joined = "\n".join(p.content_hash for p in parts).encode()
    return "sha256:" + hashlib.sha256(joined).hexdigest()


def _encryption_summary(parts: Sequence[Part]) -> dict[str, Any] | None:
    encrypted = [p.encryption for p in parts if p.encryption]
    if not encrypted:
        return None
    return {
        "columns": sorted({c for e in encrypted for c in e["columns"]}),
        "key_ids": sorted({e["key_id"] for e in encrypted}),
    }


def _snapshot(row: DatasetVersionRecord) -> DatasetVersion:
    return DatasetVersion(
        id=row.id,
        dataset=row.dataset,
        number=row.number,
        content_hash=row.content_hash,
        row_count=row.row_count,
        schema=row.schema,
        source=row.source,
        profile=row.profile,
        snapshot_digest=row.snapshot_digest,
        snapshot_size=row.snapshot_size,
        encryption=row.encryption,
        run_id=row.run_id,
        created_at=row.created_at,
        rewritten_at=row.rewritten_at,
        version=row.version,
        mode=row.mode,
        batch_rows=row.batch_rows,
        batch_hash=row.batch_hash,
    )
