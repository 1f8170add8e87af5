"""BM25 over the chunks (bm25s), addressed by the same int64 ids as the vector index.

Tokenization (:func:`analyze`): lowercase, split on anything that is not a letter or a
digit (so ``n_samples`` gives ``n`` and ``samples``, ``scipy.linalg.solve`` gives its three
parts), English stop words removed, then a light suffix stemmer (:func:`stem`, plural and
``-ing``/``-ed``/``-ly`` style endings). The choice was measured on the docstring set's dev
queries (``docs/rag/retrieval.md``): see :data:`ANALYZERS` for the variants compared.
No stemming library is a dependency: PyStemmer's Snowball stemmer is not installed here,
and the light stemmer reaches the same order of gain on this set.

Scores are BM25 (Lucene's variant, ``k1=1.5``, ``b=0.75``, bm25s' defaults). A query term
that no chunk holds is ignored; a query with no known term matches nothing (ids ``-1``).
``allowed`` restricts a search to some ids (a metadata filter) exactly: disallowed chunks
are never returned, however few allowed ones match.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["ANALYZERS", "BM25Index", "analyze", "stem"]

_FORMAT = 1
_META = "conveyor_bm25.json"
_IDS = "conveyor_ids.npy"
_DELETED = "conveyor_deleted.npy"

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_WORD_KEEP_UNDERSCORE = re.compile(r"\w+", re.UNICODE)

#: English stop words (the common short list; bm25s' own ``"en"`` list is the same kind).
STOPWORDS: frozenset[str] = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their
    then there these they this to was will with from has have had were been being its which
    who whom what when where why how all any both each few more most other some than too
    very can could should would may might must shall do does did doing so only own same
    our ours we you your yours he him his she her hers them those i me my am""".split()  # noqa: SIM905
)

_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("ational", "ate"),
    ("ization", "ize"),
    ("fulness", "ful"),
    ("iveness", "ive"),
    ("ations", "ate"),
    ("ation", "ate"),
    ("ities", "ity"),
    ("ingly", ""),
    ("edly", ""),
    ("ies", "y"),
    ("ing", ""),
    ("ers", "er"),
    ("ed", ""),
    ("ly", ""),
    ("es", "e"),
    ("s", ""),
)


def stem(word: str) -> str:
    """A light English suffix stemmer: strips one common inflectional ending when at least
    three letters remain (``samples`` -> ``sample``, ``computing`` -> ``comput``,
    ``matrices`` stays ``matrice``). Words ending in ``ss``/``us``/``is`` keep their s."""
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix, repl in _SUFFIXES:
        if word.endswith(suffix):
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                return word
            base = word[: -len(suffix)] + repl
            if len(base) >= 3:
                doubled = base[-1] == base[-2] and base[-1] not in "lsz"
                if suffix in ("ing", "ed", "edly", "ingly") and doubled:
                    base = base[:-1]  # running -> run, fitted -> fit
                return base
            return word
    return word


def _plain(text: str) -> list[str]:
    return [t for t in _WORD.findall(text.lower()) if t not in STOPWORDS]


def _stemmed(text: str) -> list[str]:
    return [stem(t) for t in _WORD.findall(text.lower()) if t not in STOPWORDS]


def _keep_identifiers(text: str) -> list[str]:
    """Stemmed parts plus each whole ``snake_case`` identifier as one more term."""
    lowered = text.lower()
    out = [stem(t) for t in _WORD.findall(lowered) if t not in STOPWORDS]
    out.extend(t for t in _WORD_KEEP_UNDERSCORE.findall(lowered) if "_" in t.strip("_"))
    return out


def _no_stopwords(text: str) -> list[str]:
    return [stem(t) for t in _WORD.findall(text.lower())]


#: The analyzers compared on the dev queries (the default is ``stem``).
ANALYZERS: dict[str, Callable[[str], list[str]]] = {
    "plain": _plain,
    "stem": _stemmed,
    "stem+identifiers": _keep_identifiers,
    "stem, stop words kept": _no_stopwords,
}
DEFAULT_ANALYZER = "stem"


def analyze(text: str, analyzer: str = DEFAULT_ANALYZER) -> list[str]:
    """The terms BM25 indexes and queries with."""
    try:
        fn = ANALYZERS[analyzer]
    except KeyError:
        raise ConfigError(
            f"unknown BM25 analyzer {analyzer!r}; known: {sorted(ANALYZERS)}", field="analyzer"
        ) from None
    return fn(text)


class BM25Index:
    """A BM25 index over chunk ids and texts. Build with :meth:`build`, reopen with
    :meth:`load`; :meth:`search` answers ``(scores, ids)`` like a vector index."""

    def __init__(
        self, model: Any, ids: NDArray[np.int64], deleted: NDArray[np.bool_], params: dict[str, Any]
    ) -> None:
        import numpy as np

        self._bm25 = model
        self._ids = ids
        self._deleted = deleted
        self._params = params
        self._analyzer = str(params["analyzer"])
        # id -> row position, for ``allowed``
        order = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[order]
        self._sorted_rows = order.astype(np.int64)

    @classmethod
    def build(
        cls,
        ids: Sequence[int] | NDArray[np.int64],
        texts: Sequence[str],
        *,
        analyzer: str = DEFAULT_ANALYZER,
        k1: float = 1.5,
        b: float = 0.75,
    ) -> BM25Index:
        """Index ``texts`` under ``ids`` (unique int64, the vector index's ids)."""
        import bm25s
        import numpy as np

        id_array = np.asarray(ids, dtype=np.int64)
        if id_array.ndim != 1 or len(id_array) != len(texts):
            raise InvalidInputError(
                f"{len(id_array)} ids for {len(texts)} texts: one id per text",
                ids=len(id_array),
                texts=len(texts),
            )
        if len(id_array) == 0:
            raise InvalidInputError("a BM25 index needs at least one text", field="texts")
        if len(np.unique(id_array)) != len(id_array):
            raise InvalidInputError("chunk ids must be unique", field="ids")
        analyze("", analyzer)  # unknown analyzer -> ConfigError before any work
        tokens = [analyze(t, analyzer) or [""] for t in texts]
        model = bm25s.BM25(k1=k1, b=b)
        model.index(tokens, show_progress=False)
        params = {"analyzer": analyzer, "k1": k1, "b": b, "method": "lucene", "format": _FORMAT}
        return cls(model, id_array, np.zeros(len(id_array), dtype=bool), params)

    @classmethod
    def load(cls, directory: str | Path) -> BM25Index:
        """The index :meth:`save` wrote into ``directory``."""
        import bm25s
        import numpy as np

        folder = Path(directory)
        meta_file = folder / _META
        if not meta_file.is_file():
            raise NotFoundError(f"no BM25 index in {folder} (no {_META})", path=str(folder))
        params = json.loads(meta_file.read_text())
        if params.get("format") != _FORMAT:
            raise ConfigError(
                f"BM25 index in {folder} has format {params.get('format')}, expected {_FORMAT}",
                path=str(folder),
            )
        model = bm25s.BM25.load(str(folder), show_progress=False)
        ids = np.load(folder / _IDS)
        deleted = np.load(folder / _DELETED)
        return cls(model, ids, deleted, params)

    def save(self, directory: str | Path) -> None:
        import numpy as np

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self._bm25.save(str(folder), show_progress=False)
        np.save(folder / _IDS, self._ids)
        np.save(folder / _DELETED, self._deleted)
        (folder / _META).write_text(json.dumps(self._params, sort_keys=True))

    def __len__(self) -> int:
        return int(len(self._ids) - self._deleted.sum())

    def params(self) -> dict[str, Any]:
        """The build parameters, recorded in the collection version."""
        return dict(self._params)

    def remove(self, ids: Sequence[int] | NDArray[np.int64]) -> int:
        """Remove ``ids`` (a deleted document's chunks): never returned again. Returns how
        many were present. Their terms stay in the statistics until the next build."""
        rows = self._rows_of(ids)
        newly = int((~self._deleted[rows]).sum())
        self._deleted[rows] = True
        return newly

    def _rows_of(self, ids: Sequence[int] | NDArray[np.int64]) -> NDArray[np.int64]:
        import numpy as np

        wanted = np.asarray(ids, dtype=np.int64).ravel()
        pos = np.searchsorted(self._sorted_ids, wanted)
        pos = np.clip(pos, 0, max(len(self._sorted_ids) - 1, 0))
        found = self._sorted_ids[pos] == wanted
        rows: NDArray[np.int64] = self._sorted_rows[pos[found]]
        return rows

    def scores(self, query: str) -> NDArray[np.float32]:
        """The BM25 score of every row (indexing order) for ``query``; 0 where no term
        matches."""
        import numpy as np

        terms = analyze(query, self._analyzer)
        term_ids = self._bm25.get_tokens_ids(terms)
        if not term_ids:
            return np.zeros(len(self._ids), dtype=np.float32)
        return np.asarray(self._bm25.get_scores_from_ids(term_ids), dtype=np.float32)

    def search(
        self,
        query: str,
        k: int,
        *,
        allowed: Sequence[int] | NDArray[np.int64] | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The ``k`` best chunks for ``query``: ``(scores, ids)``, each of length ``k``,
        best first; ids ``-1`` (score ``-inf``) where fewer than ``k`` chunks hold a query
        term. ``allowed`` restricts the result to those ids."""
        import numpy as np

        if k < 1:
            raise InvalidInputError(f"k must be positive, got {k}", field="k")
        scores = self.scores(query)
        # Only the rows holding a query term are filtered and ranked, not the whole index.
        rows = np.flatnonzero(scores > 0)
        rows = rows[~self._deleted[rows]]
        if allowed is not None:
            mask = np.zeros(len(self._ids), dtype=bool)
            mask[self._rows_of(allowed)] = True
            rows = rows[mask[rows]]
        out_scores = np.full(k, -np.inf, dtype=np.float32)
        out_ids = np.full(k, -1, dtype=np.int64)
        n = len(rows)
        if n == 0:
            return out_scores, out_ids
        take = min(k, n)
        found = scores[rows]
        if take < n:
            # every row scoring at least the k-th best: the ties at the cut are then
            # decided by id below, not by where a partition happened to leave them
            kth = np.partition(found, n - take)[n - take]
            keep = found >= kth
            rows, found = rows[keep], found[keep]
        # best first; equal scores by id, so a ranking is reproducible
        order = np.lexsort((self._ids[rows], -found))[:take]
        out_scores[:take] = found[order]
        out_ids[:take] = self._ids[rows[order]]
        return out_scores, out_ids
