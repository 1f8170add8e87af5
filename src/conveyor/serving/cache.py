"""The prediction cache: a repeated input is answered without calling the model.

Entries live in a key-value store (:mod:`conveyor.kv`: ``memory://`` by
default, ``redis://`` to share one cache between workers and machines)::

    from conveyor.backends import CACHE

    with CACHE.open("memory://?max_entries=100000") as kv:
        cache = PredictionCache(kv, ttl=300, active=[version_id])
        prediction = cache.get(version_id, table)
        if prediction is None:
            prediction = model(table)
            cache.put(version_id, table, prediction)

**Keys.** ``pred:{version_id}:{digest}``, where ``digest`` is the sha256 of
a canonical encoding of the input table (:func:`input_digest`): the columns
sorted by name, schema metadata dropped, chunks combined, written as one
Arrow IPC stream. Why that is canonical: the IPC stream of a table is a
function of its schema (names, types, nullability) and its values only, so
the same values with the same column types give the same bytes whatever
the column order or how the table was assembled; and IPC can be decoded
back to the table, so different inputs (or the same values with another
type: ``int32`` against ``int64``) never share bytes. The worst a stray
difference can cause (garbage under a null slot) is a miss, never a wrong
hit.

**Reachability.** Only versions the live route uses are reachable: the
server calls :meth:`PredictionCache.set_active` whenever the route changes,
and ``get``/``put`` for any other version miss and store nothing, so a
rolled-back version's entries are never served (they expire by TTL).

**Values** are encoded without pickle: numpy arrays as a small header
(dtype, shape) plus the raw buffer, Arrow tables and pandas objects as
Arrow IPC, anything else JSON-able with orjson (tuples come back as lists).
An encoding larger than ``max_value_bytes``, or of a type none of these can
hold, is not stored.

A cache is an optimization: when the store does not answer, ``get`` misses
and ``put`` skips (counted in :attr:`PredictionCache.errors` and logged),
and the request is served by the model.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from conveyor.errors import BackendUnavailableError, InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

    from conveyor.kv import KeyValueStore

__all__ = ["PredictionCache", "decode_value", "encode_value", "input_digest"]

log = logging.getLogger("conveyor.serving.cache")

_NUMPY, _ARROW, _FRAME, _SERIES, _JSON = b"N", b"A", b"F", b"S", b"J"
_SERIES_NO_NAME = "__conveyor_series__"
_LOG_EVERY = 10.0  # seconds between two warnings about an unreachable store


def input_digest(table: pa.Table) -> str:
    """The sha256 (hex) of ``table``'s canonical encoding (see the module docstring)."""
    import pyarrow as pa

    if not isinstance(table, pa.Table):
        raise InvalidInputError(
            f"the cache keys pyarrow.Table inputs, got {type(table).__name__}", field="table"
        )
    names = table.column_names
    if len(set(names)) != len(names):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise InvalidInputError(
            f"the input has duplicated column names: {', '.join(duplicated)}", field="table"
        )
    canonical = table.select(sorted(names)).replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, canonical.schema) as writer:
        writer.write_table(canonical)
    return hashlib.sha256(sink.getvalue()).hexdigest()


def encode_value(prediction: Any) -> bytes | None:
    """The bytes stored for ``prediction``, or ``None`` if its type cannot be stored."""
    import numpy as np

    if isinstance(prediction, np.ndarray):
        return _encode_array(prediction)
    module = type(prediction).__module__
    if module.startswith("pyarrow"):
        import pyarrow as pa

        if isinstance(prediction, pa.Table):
            return _ARROW + _ipc(prediction)
        return None
    if module.startswith("pandas"):
        return _encode_pandas(prediction)
    import orjson

    try:
        return _JSON + orjson.dumps(prediction, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return None


def decode_value(data: bytes) -> Any:
    """The prediction :func:`encode_value` encoded; ``ValueError`` if ``data`` is damaged."""
    tag, body = data[:1], memoryview(data)[1:]
    if tag == _NUMPY:
        return _decode_array(body)
    if tag == _JSON:
        import orjson

        return orjson.loads(body)
    if tag in (_ARROW, _FRAME, _SERIES):
        import pyarrow as pa

        try:
            table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
        except pa.ArrowInvalid as exc:
            raise ValueError(f"damaged cache entry: {exc}") from exc
        if tag == _ARROW:
            return table
        frame = table.to_pandas()
        if tag == _FRAME:
            return frame
        series = frame.iloc[:, 0]
        if series.name == _SERIES_NO_NAME:
            series.name = None
        return series
    raise ValueError(f"unknown cache entry tag {bytes(tag)!r}")


def _encode_array(array: Any) -> bytes | None:
    dtype = array.dtype
    if dtype.hasobject or dtype.fields is not None or dtype.kind == "V":
        return None  # would need pickle
    descr = dtype.str.encode("ascii")
    header = struct.pack(
        f"<B{len(descr)}sB{array.ndim}Q", len(descr), descr, array.ndim, *array.shape
    )
    import numpy as np

    return b"".join((_NUMPY, header, np.ascontiguousarray(array).tobytes()))


def _decode_array(body: memoryview) -> Any:
    import numpy as np

    try:
        (size,) = struct.unpack_from("<B", body, 0)
        descr, ndim = struct.unpack_from(f"<{size}sB", body, 1)
        shape = struct.unpack_from(f"<{ndim}Q", body, 2 + size)
        offset = 2 + size + 8 * ndim
        dtype = np.dtype(descr.decode("ascii"))
        # Copied, so the array is writable and does not pin the stored bytes.
        return np.frombuffer(body, dtype=dtype, offset=offset).reshape(shape).copy()
    except (struct.error, TypeError, ValueError) as exc:
        raise ValueError(f"damaged cache entry: {exc}") from exc


def _encode_pandas(prediction: Any) -> bytes | None:
    import pandas as pd
    import pyarrow as pa

    try:
        if isinstance(prediction, pd.DataFrame):
            return _FRAME + _ipc(pa.Table.from_pandas(prediction, preserve_index=True))
        if isinstance(prediction, pd.Series):
            frame = prediction.to_frame(
                name=_SERIES_NO_NAME if prediction.name is None else prediction.name
            )
            return _SERIES + _ipc(pa.Table.from_pandas(frame, preserve_index=True))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None  # object columns Arrow cannot type
    return None


def _ipc(table: pa.Table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


class PredictionCache:
    """Predictions by model version and input, in a key-value store (see the module docstring).

    ``active`` is the initial set of reachable version ids (empty: nothing is
    reachable until :meth:`set_active`). Version ids are compared as strings,
    so ``3`` and ``"3"`` are the same version. Safe to share between threads.
    """

    def __init__(
        self,
        kv: KeyValueStore,
        *,
        ttl: float | None = 300,
        max_value_bytes: int = 1 << 20,
        active: Iterable[str | int] = (),
        quiet: bool = True,
    ) -> None:
        if ttl is not None and not ttl > 0:
            raise InvalidInputError(f"ttl must be > 0 seconds or None, got {ttl!r}", field="ttl")
        if not isinstance(max_value_bytes, int) or max_value_bytes < 1:
            raise InvalidInputError(
                f"max_value_bytes must be an integer >= 1, got {max_value_bytes!r}",
                field="max_value_bytes",
            )
        self.kv = kv
        #: False: a store that does not answer raises BackendUnavailableError (after it is
        #: counted), for a caller with its own breaker; True: a miss / a skip.
        self.quiet = quiet
        self.ttl = ttl
        self.max_value_bytes = max_value_bytes
        self._active: frozenset[str] = frozenset(str(v) for v in active)
        self._lock = threading.Lock()
        self._last_warning = 0.0
        #: Lookups answered from the cache.
        self.hits = 0
        #: Lookups that were not (absent, expired, inactive version, damaged, store down).
        self.misses = 0
        #: Predictions not stored: too large, or of a type that cannot be encoded.
        self.skipped = 0
        #: Store calls that failed because the store did not answer.
        self.errors = 0

    def __repr__(self) -> str:
        return (
            f"PredictionCache(kv={self.kv!r}, ttl={self.ttl}, active={sorted(self._active)}, "
            f"hits={self.hits}, misses={self.misses})"
        )

    @property
    def local(self) -> bool:
        """Whether lookups are answered from memory (else they are I/O: call from a thread)."""
        return bool(getattr(self.kv, "local", False))

    @property
    def active(self) -> frozenset[str]:
        """The version ids whose entries are reachable."""
        return self._active

    def set_active(self, version_ids: Iterable[str | int]) -> None:
        """Make exactly these versions reachable (the versions the live route uses)."""
        self._active = frozenset(str(v) for v in version_ids)

    @staticmethod
    def key(version_id: str | int, digest: str) -> str:
        """The store key of one entry (before the store's own prefix)."""
        return f"pred:{version_id}:{digest}"

    def get(self, version_id: str | int, table: pa.Table, digest: str | None = None) -> Any:
        """The cached prediction for ``table`` under ``version_id``, or ``None``.

        Pass ``digest`` (from :func:`input_digest`) to skip hashing the table
        again when the caller will also :meth:`put` it.
        """
        if str(version_id) not in self._active:
            self._count("misses")
            return None
        key = self.key(version_id, digest or input_digest(table))
        try:
            data = self.kv.get(key)
        except BackendUnavailableError as exc:
            self._store_down(exc)
            self._count("misses")
            if not self.quiet:
                raise
            return None
        if data is None:
            self._count("misses")
            return None
        try:
            value = decode_value(data)
        except ValueError:
            log.warning("damaged prediction cache entry %s: ignored", key)
            self._count("misses")
            return None
        self._count("hits")
        return value

    def put(
        self,
        version_id: str | int,
        table: pa.Table,
        prediction: Any,
        digest: str | None = None,
    ) -> bool:
        """Store ``prediction`` for ``table`` under ``version_id``; ``True`` if it was stored.

        Nothing is stored for an inactive version, a prediction of a type that
        cannot be encoded without pickle, or one larger than ``max_value_bytes``.
        """
        if str(version_id) not in self._active:
            return False
        data = encode_value(prediction)
        if data is None or len(data) > self.max_value_bytes:
            self._count("skipped")
            return False
        key = self.key(version_id, digest or input_digest(table))
        try:
            self.kv.set(key, data, ttl=self.ttl)
        except BackendUnavailableError as exc:
            self._store_down(exc)
            if not self.quiet:
                raise
            return False
        return True

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def _store_down(self, exc: BackendUnavailableError) -> None:
        self._count("errors")
        now = time.monotonic()
        if now - self._last_warning >= _LOG_EVERY:
            self._last_warning = now
            log.warning("prediction cache unavailable, serving from the model: %s", exc)
