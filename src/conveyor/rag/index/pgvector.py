"""``postgresql://``: pgvector in PostgreSQL, the scale-out index (many servers read one table).

``postgresql://user@host:5432/db?index=hnsw&m=16&ef_construction=64&ef_search=100`` or
``?index=ivfflat&lists=100&probes=10``. One table per namespace, ``rag_<namespace>`` (``id
bigint primary key, embedding vector(d)``) in the connection's schema, searched with the
inner-product operator ``<#>`` (``vector_ip_ops``): on normalized rows that is the cosine.

- **Adds** stream a binary ``COPY`` into a temporary table, then one ``INSERT ... ON
  CONFLICT`` (an id already present is replaced): no per-row round trips.
- **The ANN index is built when first needed** (the first search): pgvector builds an index
  on loaded rows much faster than it inserts into one row by row, and IVFFlat's lists are
  k-means centroids of the rows present. Like ``ivf://``, IVFFlat waits for ``39 * lists``
  rows (before that the table is scanned exactly); HNSW is built at the first search at any
  size. Later adds and removes are maintained by PostgreSQL.
- **Filters** are ``id = ANY(%s)``; with pgvector 0.8 or later its iterative index scan
  (``hnsw.iterative_scan = strict_order``, ``ivfflat.iterative_scan = relaxed_order``) goes
  on scanning until ``k`` allowed rows are found, instead of returning fewer. A selective
  filter is answered by the primary key and an exact sort when the planner finds it cheaper.
- :meth:`PgVectorIndex.load` reconnects to the existing table (its dimension checked);
  :meth:`save` writes nothing; :meth:`drop` deletes the table.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from conveyor.backends import BackendURL, Closeable, unavailable
from conveyor.errors import (
    AlreadyExistsError,
    BackendError,
    ClosedError,
    InvalidInputError,
    NotFoundError,
)
from conveyor.rag.index._inputs import (
    as_allowed,
    as_ids,
    as_queries,
    as_vectors,
    check_batch,
    check_dimension,
    check_k,
    check_namespace,
    int_param,
)
from conveyor.rag.index._topk import empty_result

if TYPE_CHECKING:
    import numpy as np
    import psycopg
    from numpy.typing import NDArray

__all__ = ["PgVectorIndex"]

_INDEX_OPTIONS = {
    "hnsw": ("m", "ef_construction", "ef_search"),
    "ivfflat": ("lists", "probes"),
}
#: libpq options passed through to the connection.
_DRIVER_OPTIONS = ("options", "sslmode", "connect_timeout", "application_name")
_POINTS_PER_LIST = 39
_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """Run the method holding the index's lock (see ``PgVectorIndex._lock``)."""

    @functools.wraps(method)
    def locked(self: PgVectorIndex, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_F, locked)


_MAX_DIMENSION = 2000  # pgvector indexes vector columns of up to 2,000 dimensions
_MAX_EF_SEARCH = 1000  # hnsw.ef_search's upper bound


class PgVectorIndex(Closeable):
    """A pgvector table behind the index seam; see the module's notes."""

    kind = "postgresql"

    def __init__(
        self,
        url: BackendURL,
        conn: psycopg.Connection[Any],
        dimension: int,
        namespace: str,
        settings: dict[str, Any],
    ) -> None:
        self._url = url
        self._conn = conn
        self._dimension = dimension
        self.namespace = namespace
        self.table = f"rag_{namespace}"
        self._settings = settings
        self._version = self._extension_version()
        self._ann_built = self._has_ann_index()
        # One connection: calls from several threads (a server's workers) take turns, so one
        # thread's transaction (SET LOCAL + queries) never interleaves with another's.
        self._lock = threading.RLock()
        self._closed = False

    # -- the seam's constructors ----------------------------------------------------------

    @classmethod
    def from_url(cls, url: BackendURL, *, dimension: int, namespace: str) -> Self:
        """A new, empty table; :class:`AlreadyExistsError` if the namespace has one."""
        index = cls._connect(url, dimension, namespace)
        try:
            with index._conn.transaction():
                exists = index._table_dimension()
                if exists is not None:
                    raise AlreadyExistsError(
                        f"the vector table {index.table} already exists in {url}: load it "
                        "(PgVectorIndex.load) or drop it first",
                        namespace=namespace,
                    )
                index._conn.execute(
                    f"CREATE TABLE {index.table} "
                    f"(id bigint PRIMARY KEY, embedding vector({dimension}) NOT NULL)"
                )
        except BaseException:
            index.close()
            raise
        return index

    @classmethod
    def load(
        cls, url: BackendURL, directory: Path | None, *, dimension: int, namespace: str
    ) -> Self:
        """Reconnect to the namespace's table (``directory`` is not used)."""
        index = cls._connect(url, dimension, namespace)
        try:
            found = index._table_dimension()
            if found is None:
                raise NotFoundError(f"no vector table {index.table} in {url}", namespace=namespace)
            if found != dimension:
                raise InvalidInputError(
                    f"the vector table {index.table} has dimension {found} but dimension "
                    f"{dimension} was asked for",
                    field="dimension",
                    got=found,
                    expected=dimension,
                )
        except BaseException:
            index.close()
            raise
        return index

    @classmethod
    def _connect(cls, url: BackendURL, dimension: int, namespace: str) -> Self:
        import psycopg

        check_dimension(dimension)
        check_namespace(namespace)
        if dimension > _MAX_DIMENSION:
            raise InvalidInputError(
                f"pgvector indexes at most {_MAX_DIMENSION} dimensions, got {dimension}",
                field="dimension",
            )
        settings = cls._settings_of(url)
        driver_query = {k: v for k, v in url.query.items() if k in _DRIVER_OPTIONS}
        dsn = url.with_(driver=None, query=driver_query).render(hide_password=False)
        try:
            conn = psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError as exc:
            raise unavailable(url, "index", exc) from exc
        try:
            _enable_extension(conn, url)
        except BaseException:
            conn.close()
            raise
        return cls(url, conn, dimension, namespace, settings)

    @staticmethod
    def _settings_of(url: BackendURL) -> dict[str, Any]:
        kind = url.query.get("index", "hnsw")
        if kind not in _INDEX_OPTIONS:
            raise InvalidInputError(
                f"{url}: index must be hnsw or ivfflat, got {kind!r}", field="index"
            )
        known = ("index", *_INDEX_OPTIONS[kind], *_DRIVER_OPTIONS)
        unknown = sorted(set(url.query) - set(known))
        if unknown:
            other = "ivfflat" if kind == "hnsw" else "hnsw"
            hint = [u for u in unknown if u in _INDEX_OPTIONS[other]]
            extra = f" ({', '.join(hint)} belong to index={other})" if hint else ""
            raise InvalidInputError(
                f"{url}: unknown pgvector option(s) {', '.join(unknown)}{extra}; known for "
                f"index={kind}: {', '.join(known)}",
                field="url",
            )
        if kind == "hnsw":
            return {
                "index": kind,
                "m": int_param(url, "m", 16, minimum=2),
                "ef_construction": int_param(url, "ef_construction", 64, minimum=4),
                "ef_search": int_param(url, "ef_search", 100),
            }
        return {
            "index": kind,
            "lists": int_param(url, "lists", 100),
            "probes": int_param(url, "probes", 10),
        }

    # -- the protocol ---------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        return self._dimension

    @_locked
    def __len__(self) -> int:
        self._check_open()
        row = self._conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()
        return int(row[0]) if row else 0

    @_locked
    def add(self, ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        """Add rows by binary COPY; an id already present has its vector replaced."""
        self._check_open()
        ids = as_ids(ids)
        vectors = as_vectors(vectors, self._dimension)
        check_batch(ids, vectors)
        if len(ids) == 0:
            return
        payload = _copy_payload(ids, vectors)
        with self._conn.transaction():
            self._conn.execute(f"CREATE TEMP TABLE rag_staging (LIKE {self.table}) ON COMMIT DROP")
            with self._conn.cursor().copy(
                "COPY rag_staging (id, embedding) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(payload)
            self._conn.execute(
                f"INSERT INTO {self.table} (id, embedding) SELECT id, embedding FROM rag_staging "
                "ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding"
            )

    @_locked
    def remove(self, ids: NDArray[np.int64]) -> int:
        self._check_open()
        ids = as_ids(ids)
        if len(ids) == 0:
            return 0
        cur = self._conn.execute(f"DELETE FROM {self.table} WHERE id = ANY(%s)", (ids.tolist(),))
        return int(cur.rowcount)

    @_locked
    def search(
        self,
        queries: NDArray[np.float32],
        k: int,
        *,
        allowed: NDArray[np.int64] | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        import numpy as np

        self._check_open()
        queries = as_queries(queries, self._dimension)
        k = check_k(k)
        allowed = as_allowed(allowed)
        out_scores, out_ids = empty_result(len(queries), k)
        if len(queries) == 0 or (allowed is not None and len(allowed) == 0):
            return out_scores, out_ids
        self._ensure_ann_index()
        where, args = ("", ()) if allowed is None else ("WHERE id = ANY(%s)", (allowed.tolist(),))
        sql = (
            f"SELECT id, -(embedding <#> %s::vector) FROM {self.table} {where} "
            "ORDER BY embedding <#> %s::vector LIMIT %s"
        )
        with self._conn.transaction():
            self._set_search_settings(k, filtered=allowed is not None)
            for row, query in enumerate(queries):
                text = _vector_text(query)
                found = self._conn.execute(sql, (text, *args, text, k)).fetchall()
                # relaxed_order (IVFFlat's iterative scan) may return rows slightly out of order
                found.sort(key=lambda r: -r[1])
                if found:
                    out_ids[row, : len(found)] = [r[0] for r in found]
                    out_scores[row, : len(found)] = np.asarray([r[1] for r in found])
        return out_scores, out_ids

    @_locked
    def params(self) -> dict[str, Any]:
        self._check_open()
        count = len(self)
        size = self._conn.execute(
            "SELECT pg_total_relation_size(%s::regclass)", (self.table,)
        ).fetchone()
        total = int(size[0]) if size else 0
        return {
            "kind": self.kind,
            "library": f"pgvector {self._version}",
            "metric": "cosine",
            "dimension": self._dimension,
            "namespace": self.namespace,
            "table": self.table,
            "count": count,
            **self._settings,
            "ann_index_built": self._ann_built,
            "bytes_per_vector": round(total / count, 1) if count else None,
        }

    @_locked
    def save(self, directory: Path) -> None:
        """Nothing to write: the table is the index. Builds the ANN index if still missing."""
        self._check_open()
        self._ensure_ann_index()

    @_locked
    def drop(self) -> None:
        """Delete the namespace's table (and its index)."""
        self._check_open()
        self._conn.execute(f"DROP TABLE IF EXISTS {self.table}")
        self._ann_built = False

    @_locked
    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()

    # -- inside ---------------------------------------------------------------------------

    @property
    def _ann_name(self) -> str:
        return f"{self.table}_ann"

    def _extension_version(self) -> str:
        row = self._conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        return str(row[0]) if row else "unknown"

    def _iterative_scan(self) -> bool:
        major, minor = (int(x) for x in self._version.split(".")[:2])
        return (major, minor) >= (0, 8)

    def _table_dimension(self) -> int | None:
        row = self._conn.execute(
            "SELECT a.atttypmod FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) "
            "AND a.attname = 'embedding'",
            (self.table,),
        ).fetchone()
        return int(row[0]) if row else None

    def _has_ann_index(self) -> bool:
        row = self._conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self._ann_name,))
        found = row.fetchone()
        return bool(found and found[0])

    def _ensure_ann_index(self) -> None:
        if self._ann_built:
            return
        settings = self._settings
        if settings["index"] == "hnsw":
            using = (
                f"hnsw (embedding vector_ip_ops) WITH (m = {settings['m']}, "
                f"ef_construction = {settings['ef_construction']})"
            )
        else:
            if len(self) < _POINTS_PER_LIST * settings["lists"]:
                return  # too few rows for k-means: the table is scanned exactly meanwhile
            using = f"ivfflat (embedding vector_ip_ops) WITH (lists = {settings['lists']})"
        with self._conn.transaction():
            self._conn.execute("SELECT set_config('maintenance_work_mem', '512MB', true)")
            self._conn.execute(
                f"CREATE INDEX IF NOT EXISTS {self._ann_name} ON {self.table} USING {using}"
            )
        self._ann_built = True

    def _set_search_settings(self, k: int, *, filtered: bool) -> None:
        settings = self._settings
        values: dict[str, str] = {}
        if k > _MAX_EF_SEARCH:
            # pgvector's HNSW scan returns at most ef_search (<= 1,000) rows: a larger k is
            # answered by an exact scan of the table.
            values["enable_indexscan"] = "off"
        elif settings["index"] == "hnsw":
            # An HNSW scan returns at most ef_search rows: never fewer than k.
            values["hnsw.ef_search"] = str(max(settings["ef_search"], k))
            if filtered and self._iterative_scan():
                values["hnsw.iterative_scan"] = "strict_order"
        else:
            values["ivfflat.probes"] = str(settings["probes"])
            # Probed lists may hold fewer than k rows, filtered or not: scan on until k.
            if self._iterative_scan():
                values["ivfflat.iterative_scan"] = "relaxed_order"
        for name, value in values.items():
            self._conn.execute("SELECT set_config(%s, %s, true)", (name, value))

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the pgvector index {self.table!r} is closed")


def _enable_extension(conn: psycopg.Connection[Any], url: BackendURL) -> None:
    """``CREATE EXTENSION IF NOT EXISTS vector``, and its schema on the search path."""
    import psycopg

    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'vector'"
    ).fetchone()
    if row is None:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            raise BackendError(
                f"the pgvector extension is not available in {url}: {exc}. Install it "
                "(Debian: postgresql-<version>-pgvector; `scripts/services.sh postgres` "
                "installs or builds it) and run CREATE EXTENSION vector as a superuser",
                url=str(url),
            ) from exc
        return
    schema = row[0]
    on_path = conn.execute("SELECT %s = ANY(current_schemas(false))", (schema,)).fetchone()
    if on_path and not on_path[0]:
        # A URL whose search_path names another schema (tests): keep the type reachable.
        conn.execute(
            "SELECT set_config('search_path', current_setting('search_path') || ', ' || "
            "quote_ident(%s), false)",
            (schema,),
        )


def _vector_text(vector: NDArray[np.float32]) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector.tolist()) + "]"


def _copy_payload(ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> bytes:
    """PostgreSQL's binary COPY stream of (bigint, vector) rows, built by numpy in one pass.

    pgvector's binary form of a vector is int16 dimensions, int16 unused, then float4s, all
    big-endian (its ``vector_send``).
    """
    import numpy as np

    n, d = vectors.shape
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("id_len", ">i4"),
            ("id", ">i8"),
            ("vec_len", ">i4"),
            ("dim", ">i2"),
            ("unused", ">i2"),
            ("values", ">f4", (d,)),
        ]
    )
    rows = np.empty(n, dtype=row)
    rows["fields"] = 2
    rows["id_len"] = 8
    rows["id"] = ids
    rows["vec_len"] = 4 + 4 * d
    rows["dim"] = d
    rows["unused"] = 0
    rows["values"] = vectors
    header = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
    return header + rows.tobytes() + b"\xff\xff"
