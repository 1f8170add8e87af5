"""Deleting a data subject everywhere Conveyor keeps data (GDPR article 17).

``forget(("customer_id", 123))`` removes every row whose ``customer_id`` is
123 from every dataset version (rewriting only the snapshot parts that hold
such rows), from every quarantine batch, and every event whose payload holds
it, then deletes the artifacts nothing refers to any more and compacts the
embedded SQLite files so the bytes are gone from disk, not only unlinked.
The erasure itself is recorded as an audit event holding the column and a
hash of the value, never the value.

Artifacts a program stored by itself (``project.artifacts.put(...)``) are
not data-layer records and are not searched: keep personal data in dataset
versions so it can be forgotten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import orjson

from conveyor.data.crypto import decrypt_cells, encrypt_cells
from conveyor.data.events import DATA_FORGOTTEN
from conveyor.data.quarantine import reason_counts
from conveyor.data.versions import DatasetRepository, Part
from conveyor.errors import InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.events.log import EventLog

__all__ = ["ForgetResult", "forget", "parse_key"]


@dataclass(frozen=True, slots=True)
class ForgetResult:
    column: str
    value_sha256: str
    versions_rewritten: int
    rows_removed: int
    quarantine_batches_rewritten: int
    quarantine_rows_removed: int
    events_erased: int
    artifacts_deleted: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_key(text: str) -> tuple[str, str]:
    """``column=value`` from the command line."""
    column, sep, value = text.partition("=")
    if not sep or not column.strip():
        raise InvalidInputError(
            f"--key {text!r}: expected column=value, e.g. customer_id=123", field="key"
        )
    return column.strip(), value


def forget(
    repo: DatasetRepository,
    events: EventLog | None,
    column: str,
    value: Any,
    *,
    actor: str | None = None,
    profile: Callable[[pa.Table, Sequence[str]], dict[str, Any]] | None = None,
) -> ForgetResult:
    """Remove the subject ``column == value`` from versions, quarantine and events."""
    value_hash = hashlib.sha256(orjson.dumps(str(value))).hexdigest()
    replaced: set[str] = set()
    versions, rows = _forget_in_versions(repo, column, value, replaced, profile)
    batches, quarantined = _forget_in_quarantine(repo, column, value, replaced)
    erased = events.erase(column, value) if events is not None else 0
    deleted = _delete_unreferenced(repo, replaced)
    _compact(repo)
    result = ForgetResult(column, value_hash, versions, rows, batches, quarantined, erased, deleted)
    if events is not None:
        events.record(
            DATA_FORGOTTEN,
            subject=f"{column}:sha256:{value_hash[:16]}",
            actor=actor,
            payload=result.to_dict(),
        )
    return result


def _matches(table: pa.Table, column: str, value: Any) -> Any:
    """A boolean mask of the rows holding the subject (compared in the column's type)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    data = table.column(column)
    try:
        target = (
            pa.scalar(value).cast(data.type)
            if not isinstance(value, str)
            else pc.cast(pa.array([value]), data.type)[0]
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pc.equal(pc.cast(data, pa.string()), str(value))
    return pc.fill_null(pc.equal(data, target), False)


def _forget_in_versions(
    repo: DatasetRepository,
    column: str,
    value: Any,
    replaced: set[str],
    profile: Callable[[pa.Table, Sequence[str]], dict[str, Any]] | None,
) -> tuple[int, int]:
    import pyarrow as pa
    import pyarrow.compute as pc

    rewritten_parts: dict[str, tuple[Part, int]] = {}
    versions = rows_removed = 0
    for version in repo.all():
        if column not in [c["name"] for c in version.schema["columns"]]:
            continue
        parts, changed = [], False
        for part in repo.parts(version):
            if part.digest not in rewritten_parts:
                table = repo.read_part(part)
                mask = _matches(table, column, value)
                hits = pc.sum(mask).as_py() or 0
                if hits:
                    sensitive = (part.encryption or {}).get("columns", [])
                    new = repo._write_part(table.filter(pc.invert(mask)), sensitive)
                    replaced.update(d for d in (part.digest, part.secret_digest) if d)
                else:
                    new = part
                rewritten_parts[part.digest] = (new, hits)
            new, hits = rewritten_parts[part.digest]
            changed |= new is not part
            rows_removed += hits if new is not part else 0
            parts.append(new)
        if changed:
            versions += 1
            replaced.add(version.snapshot_digest)
            new_profile = None
            if profile is not None:
                tables = [repo.read_part(p) for p in parts]
                sensitive = (version.encryption or {}).get("columns", [])
                new_profile = profile(pa.concat_tables(tables), sensitive)
            repo.replace_parts(version, parts, profile=new_profile)
    return versions, rows_removed


def _forget_in_quarantine(
    repo: DatasetRepository, column: str, value: Any, replaced: set[str]
) -> tuple[int, int]:
    import io

    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    from conveyor.data.tables import QuarantineBatchRecord

    batches = removed = 0
    with repo.store.read() as session:
        records = [
            (r.id, r.digest, r.encryption)
            for r in session.scalars(sa.select(QuarantineBatchRecord))
        ]
    for batch_id, digest, encryption in records:
        table = pq.read_table(io.BytesIO(repo.artifacts.get(digest)))
        if column not in table.column_names:
            continue
        encrypted = list((encryption or {}).get("columns", []))
        plain = (
            decrypt_cells(table, encrypted, repo.keyring) if encrypted and repo.keyring else table
        )
        mask = _matches(plain, column, value)
        hits = pc.sum(mask).as_py() or 0
        if not hits:
            continue
        kept = plain.filter(pc.invert(mask))
        if encrypted and repo.keyring:
            kept = encrypt_cells(kept, encrypted, repo.keyring)
        buffer = io.BytesIO()
        pq.write_table(kept, buffer, compression="zstd")
        ref = repo.artifacts.put(buffer.getvalue())
        reasons = reason_counts(kept) if kept.num_rows else {}
        with repo.store.session() as session:
            row = session.get(QuarantineBatchRecord, batch_id)
            assert row is not None
            row.digest, row.row_count, row.reasons = ref.digest, kept.num_rows, reasons
        replaced.add(digest)
        batches += 1
        removed += hits
    return batches, removed


def _delete_unreferenced(repo: DatasetRepository, candidates: set[str]) -> int:
    """Delete replaced artifacts that no version, part or quarantine batch still uses."""
    import sqlalchemy as sa

    from conveyor.data.tables import QuarantineBatchRecord

    if not candidates:
        return 0
    referenced: set[str] = set()
    for version in repo.all():
        referenced.add(version.snapshot_digest)
        for part in repo.parts(version):
            referenced.update(d for d in (part.digest, part.secret_digest) if d)
    with repo.store.read() as session:
        referenced.update(session.scalars(sa.select(QuarantineBatchRecord.digest)))
    return sum(repo.artifacts.delete(d) for d in candidates - referenced)


def _compact(repo: DatasetRepository) -> None:
    """Rewrite the embedded database file so deleted values leave the disk."""
    engine = repo.store.engine
    if engine.dialect.name != "sqlite":
        return  # PostgreSQL reclaims dead rows with (auto)vacuum; see docs/data.md
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        for statement in (
            "PRAGMA wal_checkpoint(TRUNCATE)",
            "VACUUM",
            "PRAGMA wal_checkpoint(TRUNCATE)",
        ):
            raw.execute(statement)
