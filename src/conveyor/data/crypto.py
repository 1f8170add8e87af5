"""Encryption of sensitive columns at rest, with key rotation, and masking.

Columns marked ``sensitive`` in the spec never reach the artifact store in
clear: a snapshot part keeps the other columns as Parquet and the sensitive
ones as one AES-256-GCM message (an Arrow IPC stream), whose associated
data binds it to its column names and row count, so a blob swapped between
parts or truncated fails authentication instead of decrypting to wrong rows.
Event payload values are encrypted one by one as ``enc:v1:<key id>:<base64>``.

The key never sits in ``conveyor.yaml``: it comes from an environment
variable (``$CONVEYOR_DATA_KEY`` by default) or a key file, holding either
one base64 key of 32 bytes, or a keyring for rotation::

    {"current": "2026-11", "keys": {"2026-05": "<base64>", "2026-11": "<base64>"}}

New data is encrypted with ``current``; older keys stay readable until
``conveyor data rotate-key`` has re-encrypted everything with the current one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from conveyor.errors import ConfigError, IntegrityError, NotFoundError

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.config import ProjectSpec

__all__ = [
    "ALGORITHM",
    "MASK",
    "Keyring",
    "decrypt_columns",
    "decrypt_value",
    "encrypt_columns",
    "encrypt_value",
    "generate_key",
    "mask_table",
]

ALGORITHM = "AES-256-GCM"
MASK = "***"
_VALUE_PREFIX = "enc:v1:"
_NONCE = 12


def generate_key() -> str:
    """A new random 256-bit key, base64-encoded (``conveyor data keygen``)."""
    return base64.b64encode(os.urandom(32)).decode()


@dataclass(frozen=True)
class Keyring:
    """Keys by id; ``current`` encrypts, every key decrypts."""

    keys: Mapping[str, bytes]
    current: str

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise ConfigError(f"the keyring's current key {self.current!r} is not among its keys")
        for key_id, key in self.keys.items():
            if len(key) != 32:
                raise ConfigError(
                    f"key {key_id!r} is {len(key)} bytes; AES-256 needs 32 "
                    "(generate one with `conveyor data keygen`)"
                )

    @classmethod
    def parse(cls, text: str, where: str) -> Keyring:
        """A keyring from one base64 key or the JSON keyring form."""
        text = text.strip()
        if text.startswith("{"):
            try:
                doc = orjson.loads(text)
                keys = {str(k): _b64(v, f"{where}: key {k!r}") for k, v in doc["keys"].items()}
                return cls(keys=keys, current=str(doc["current"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise ConfigError(
                    f'{where}: expected {{"current": id, "keys": {{id: base64}}}} ({exc})'
                ) from None
        key = _b64(text, where)
        key_id = hashlib.sha256(key).hexdigest()[:12]
        return cls(keys={key_id: key}, current=key_id)

    @classmethod
    def from_spec(cls, spec: ProjectSpec, env: Mapping[str, str] | None = None) -> Keyring | None:
        """The project's keyring, or None when none is configured."""
        from conveyor.data.settings import encryption_of

        env = os.environ if env is None else env
        encryption = encryption_of(spec)
        value = env.get(encryption.key_env)
        if value:
            return cls.parse(value, f"${encryption.key_env}")
        if encryption.key_file:
            path = Path(encryption.key_file)
            path = path if path.is_absolute() else spec.root / path
            try:
                return cls.parse(path.read_text(), str(path))
            except OSError as exc:
                raise ConfigError(f"key file {path}: {exc.strerror}") from None
        return None

    def key(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise NotFoundError(
                f"data was encrypted with key {key_id!r}, which is not in the keyring "
                f"(keys: {', '.join(sorted(self.keys))}); add it back to decrypt",
                key_id=key_id,
            ) from None


def require_keyring(keyring: Keyring | None, what: str, env_var: str) -> Keyring:
    """The keyring, or a ConfigError saying how to provide one."""
    if keyring is None:
        raise ConfigError(
            f"{what} has sensitive columns but no encryption key is configured: set "
            f"${env_var} (generate a key with `conveyor data keygen`) or encryption.key_file"
        )
    return keyring


def _b64(value: Any, where: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: not a base64 key") from None


def _aead(key: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _associated(columns: Sequence[str], rows: int, bind: str) -> bytes:
    return orjson.dumps({"columns": list(columns), "rows": rows, "bind": bind})


def encrypt_columns(
    table: pa.Table, columns: Sequence[str], keyring: Keyring, *, bind: str = ""
) -> tuple[pa.Table, bytes | None, dict[str, Any] | None]:
    """Split off ``columns`` (those present) as one encrypted blob.

    ``bind`` (the part's content hash) is authenticated with the blob, so a
    blob moved to another part of the same shape fails to decrypt.

    Returns the table without them, the blob, and the metadata needed to
    decrypt (column order, key id, row count); ``(table, None, None)`` when
    none of the columns is in the table.
    """
    import pyarrow as pa

    present = [c for c in columns if c in table.column_names]
    if not present:
        return table, None, None
    sink = pa.BufferOutputStream()
    sub = table.select(present)
    with pa.ipc.new_stream(sink, sub.schema) as writer:
        writer.write_table(sub)
    nonce = os.urandom(_NONCE)
    key_id = keyring.current
    blob = nonce + _aead(keyring.key(key_id)).encrypt(
        nonce, sink.getvalue().to_pybytes(), _associated(present, table.num_rows, bind)
    )
    meta = {
        "algorithm": ALGORITHM,
        "key_id": key_id,
        "columns": present,
        "order": table.column_names,
        "rows": table.num_rows,
    }
    return table.drop_columns(present), blob, meta


def decrypt_columns(
    table: pa.Table, blob: bytes, meta: Mapping[str, Any], keyring: Keyring, *, bind: str = ""
) -> pa.Table:
    """Put the encrypted columns back, in their original order."""
    import pyarrow as pa
    from cryptography.exceptions import InvalidTag

    columns, rows = list(meta["columns"]), int(meta["rows"])
    if table.num_rows != rows:
        raise IntegrityError(f"an encrypted part holds {rows} rows but its table {table.num_rows}")
    try:
        plain = _aead(keyring.key(meta["key_id"])).decrypt(
            blob[:_NONCE], blob[_NONCE:], _associated(columns, rows, bind)
        )
    except InvalidTag:
        raise IntegrityError(
            f"encrypted columns {columns} failed authentication: wrong key or altered data",
            key_id=meta["key_id"],
        ) from None
    secret = pa.ipc.open_stream(plain).read_all()
    merged = {name: table.column(name) for name in table.column_names}
    merged.update({name: secret.column(name) for name in columns})
    return pa.table({name: merged[name] for name in meta["order"]})


def encrypt_value(value: Any, keyring: Keyring) -> str:
    """One JSON value as ``enc:v1:<key id>:<base64(nonce + ciphertext)>``."""
    nonce = os.urandom(_NONCE)
    key_id = keyring.current
    sealed = _aead(keyring.key(key_id)).encrypt(nonce, orjson.dumps(value), key_id.encode())
    return f"{_VALUE_PREFIX}{key_id}:{base64.b64encode(nonce + sealed).decode()}"


def decrypt_value(token: Any, keyring: Keyring) -> Any:
    """The value of an ``encrypt_value`` token; other values pass through unchanged."""
    if not isinstance(token, str) or not token.startswith(_VALUE_PREFIX):
        return token
    from cryptography.exceptions import InvalidTag

    key_id, _, body = token[len(_VALUE_PREFIX) :].partition(":")
    raw = base64.b64decode(body)
    try:
        plain = _aead(keyring.key(key_id)).decrypt(raw[:_NONCE], raw[_NONCE:], key_id.encode())
    except InvalidTag:
        raise IntegrityError("an encrypted value failed authentication", key_id=key_id) from None
    return orjson.loads(plain)


def encrypt_fields(
    payload: Mapping[str, Any], fields: Sequence[str], keyring: Keyring
) -> dict[str, Any]:
    """``payload`` with the named top-level fields encrypted (for event payloads)."""
    return {k: encrypt_value(v, keyring) if k in fields else v for k, v in payload.items()}


def mask_table(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """``table`` with each sensitive column replaced by ``***`` (null stays null), for display."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for name in columns:
        if name in table.column_names:
            index = table.column_names.index(name)
            column = table.column(name)
            masked = pc.if_else(pc.is_null(column), pa.scalar(None, pa.string()), MASK)
            table = table.set_column(index, pa.field(name, pa.string()), masked)
    return table


def encrypt_cells(table: pa.Table, columns: Sequence[str], keyring: Keyring) -> pa.Table:
    """Each value of ``columns`` as an ``encrypt_value`` token (for small tables: quarantine)."""
    import pyarrow as pa

    for name in columns:
        if name in table.column_names:
            index = table.column_names.index(name)
            values = [
                None if v is None else encrypt_value(v, keyring)
                for v in table.column(name).to_pylist()
            ]
            table = table.set_column(
                index, pa.field(name, pa.string()), pa.array(values, pa.string())
            )
    return table


def decrypt_cells(table: pa.Table, columns: Sequence[str], keyring: Keyring) -> pa.Table:
    """The inverse of :func:`encrypt_cells` (values come back as their JSON types)."""
    import pyarrow as pa

    for name in columns:
        if name in table.column_names:
            index = table.column_names.index(name)
            values = [decrypt_value(v, keyring) for v in table.column(name).to_pylist()]
            table = table.set_column(index, name, pa.array(values))
    return table
