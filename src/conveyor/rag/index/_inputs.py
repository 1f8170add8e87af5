"""What every vector index checks at its boundary, with the same errors everywhere.

Ids are non-negative int64 (``-1`` is the "no result" marker), vectors float32 rows of the
index's dimension, finite; a mismatch names both dimensions. Namespaces are identifiers,
because one backend (PostgreSQL) makes a table of them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.backends import BackendURL, check_options, int_option
from conveyor.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "META_FILE",
    "as_allowed",
    "as_ids",
    "as_queries",
    "as_vectors",
    "check_k",
    "check_namespace",
    "int_param",
    "read_meta",
    "write_meta",
]

META_FILE = "index.json"
_NAMESPACE = re.compile(r"[a-z][a-z0-9_]{0,47}")


def check_namespace(namespace: str) -> str:
    """``namespace`` if it is a lower-case identifier of at most 48 characters."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise InvalidInputError(
            f"index namespace {namespace!r} is not allowed: use a lower-case letter followed by "
            "up to 47 lower-case letters, digits or underscores (it names a table)",
            field="namespace",
        )
    return namespace


def check_dimension(dimension: int) -> int:
    if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 1:
        raise InvalidInputError(
            f"index dimension must be a positive integer, got {dimension!r}", field="dimension"
        )
    return dimension


def int_param(url: BackendURL, name: str, default: int, *, minimum: int = 1) -> int:
    """An integer build parameter from the URL's query (a clear error otherwise)."""
    return int_option(url, name, default, minimum=minimum)


def check_url(url: BackendURL, allowed: tuple[str, ...], what: str) -> None:
    """Refuse unknown query parameters and a host or path on an embedded index's URL."""
    check_options(url, allowed, what)
    if url.host or url.path not in ("", "/"):
        raise InvalidInputError(
            f"{url}: the {what} is embedded and takes no host or path, only query parameters "
            f"({', '.join(allowed)})",
            field="url",
        )


def as_ids(ids: Any) -> NDArray[np.int64]:
    """A 1-D int64 array of distinct, non-negative ids."""
    import numpy as np

    array = np.asarray(ids)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise InvalidInputError(
            f"ids must be a 1-D array of integers, got shape {array.shape} of {array.dtype}",
            field="ids",
        )
    array = array.astype(np.int64, copy=False)
    if array.size and int(array.min()) < 0:
        raise InvalidInputError(
            f"ids must be >= 0 (-1 marks 'no result'), got {int(array.min())}", field="ids"
        )
    return array


def as_vectors(vectors: Any, dimension: int, *, what: str = "vectors") -> NDArray[np.float32]:
    """A C-contiguous ``(n, dimension)`` float32 array of finite values."""
    import numpy as np

    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1 and what == "queries":
        array = array[None, :]
    if array.ndim != 2:
        raise InvalidInputError(
            f"{what} must be a 2-D array (n, {dimension}), got shape {array.shape}", field=what
        )
    if array.shape[1] != dimension:
        raise InvalidInputError(
            f"{what} have dimension {array.shape[1]} but the index has dimension {dimension}",
            field=what,
            got=int(array.shape[1]),
            expected=dimension,
        )
    if array.size and not np.isfinite(array).all():
        raise InvalidInputError(f"{what} contain NaN or infinite values", field=what)
    return np.ascontiguousarray(array)


def as_queries(queries: Any, dimension: int) -> NDArray[np.float32]:
    return as_vectors(queries, dimension, what="queries")


def check_batch(ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
    """One vector per id, no id twice in the batch."""
    import numpy as np

    if len(ids) != len(vectors):
        raise InvalidInputError(
            f"{len(ids)} ids for {len(vectors)} vectors: give one id per vector", field="ids"
        )
    if len(np.unique(ids)) != len(ids):
        raise InvalidInputError("ids must be distinct within one add()", field="ids")


def check_k(k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}", field="k")
    return k


def as_allowed(allowed: Any) -> NDArray[np.int64] | None:
    """The filter's ids as a sorted, distinct int64 array (``None``: no filter)."""
    import numpy as np

    if allowed is None:
        return None
    array = np.asarray(allowed)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise InvalidInputError(
            f"allowed must be a 1-D array of ids, got shape {array.shape} of {array.dtype}",
            field="allowed",
        )
    return np.unique(array.astype(np.int64, copy=False))


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_meta(directory: Path | None, kind: str, dimension: int) -> dict[str, Any]:
    """The saved index's description; its kind and dimension must be what the caller expects."""
    if directory is None:
        raise InvalidInputError(f"loading a {kind} index needs the directory it was saved into")
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise NotFoundError(f"no saved vector index in {directory} ({META_FILE} is missing)")
    meta: dict[str, Any] = json.loads(path.read_text())
    if meta.get("kind") != kind:
        raise InvalidInputError(
            f"{directory} holds a {meta.get('kind')} index, not a {kind} one", field="url"
        )
    if meta.get("dimension") != dimension:
        raise InvalidInputError(
            f"the index saved in {directory} has dimension {meta.get('dimension')} but "
            f"dimension {dimension} was asked for",
            field="dimension",
            got=meta.get("dimension"),
            expected=dimension,
        )
    return meta
