"""Key rotation: seal every encrypted snapshot part and quarantine batch under the current key.

Add the new key to the keyring as ``current`` (keeping the old one), run
``conveyor data rotate-key``, then the old key can be removed: nothing needs it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from conveyor.data.crypto import decrypt_cells, encrypt_cells
from conveyor.data.versions import DatasetRepository, Part
from conveyor.errors import InvalidInputError

__all__ = ["RotationResult", "rotate"]


@dataclass(frozen=True, slots=True)
class RotationResult:
    key_id: str
    versions: int
    parts: int
    quarantine_batches: int


def rotate(repo: DatasetRepository) -> RotationResult:
    """Re-encrypt under ``repo.keyring.current`` whatever another key sealed."""
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    from conveyor.data.tables import QuarantineBatchRecord

    keyring = repo.keyring
    if keyring is None:
        raise InvalidInputError(
            "no encryption key is configured: nothing to rotate to", field="key"
        )
    resealed: dict[str, Part] = {}
    versions = 0
    for version in repo.all():
        if not version.encryption or version.encryption["key_ids"] == [keyring.current]:
            continue
        parts = []
        for part in repo.parts(version):
            if part.digest not in resealed:
                resealed[part.digest] = repo.rotate_part(part)
            parts.append(resealed[part.digest])
        repo.replace_parts(version, parts)
        versions += 1
    batches = 0
    with repo.store.read() as session:
        stale = [
            (r.id, r.digest, dict(r.encryption))
            for r in session.scalars(sa.select(QuarantineBatchRecord))
            if r.encryption and r.encryption.get("key_id") != keyring.current
        ]
    for batch_id, digest, encryption in stale:
        table = pq.read_table(io.BytesIO(repo.artifacts.get(digest)))
        columns = list(encryption["columns"])
        table = encrypt_cells(decrypt_cells(table, columns, keyring), columns, keyring)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        ref = repo.artifacts.put(buffer.getvalue())
        with repo.store.session() as session:
            row = session.get(QuarantineBatchRecord, batch_id)
            assert row is not None
            row.digest = ref.digest
            row.encryption = {**encryption, "key_id": keyring.current}
        batches += 1
    # A resealed part keeps its Parquet (same plain columns) and gets a new secret blob.
    changed = sum(
        1 for p in resealed.values() if p.encryption and p.encryption["key_id"] == keyring.current
    )
    return RotationResult(keyring.current, versions, changed, batches)
