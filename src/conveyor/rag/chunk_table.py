"""A loaded version's chunks, column by column: what a search reads, without an object per chunk.

A served version used to hold its chunks as a dict of :class:`StoredChunk`: for 200,000
chunks, about a million Python objects (the chunk, its text, its document id, its metadata
dict with its keys and values), a few hundred bytes of headers each beyond the text, which
every full garbage collection walked until the version was frozen. A search reads ten of
them.

:class:`ChunkTable` keeps the same mapping (chunk id -> :class:`StoredChunk`) in a few
arrays: the ids (sorted: a lookup is a binary search), one code per chunk into the list of
document ids, the positions (ordinal, start, end, tokens) in one integer array, and the
texts and metadata as UTF-8 and JSON in two byte strings with their offsets. A
:class:`StoredChunk` is made when one is asked for (a search's hits, a packed context).
The metadata fields a filter may name are known from the load; the value table of one
field (which chunks have which value) is built from the metadata column alone, the first
time a filter names it.

::

    table = ChunkTable.build(rows)        # (id, doc_id, ordinal, text, start, end, tokens, meta)
    table[4711].text, 4711 in table, len(table)
    table.fields                          # {"doc_id", "source", "title", ...}
    table.field_values("title")           # (chunk id, value) for every chunk that has one
"""

from __future__ import annotations

import bisect
import json
import operator
import re
from array import array
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

# Loaded with the collections that build the table (no cycle: they import this lazily).
from conveyor.rag.collections import StoredChunk

__all__ = ["ChunkTable"]

#: ``(id, doc_id, ordinal, text, start, end, n_tokens, metadata)``: a chunk row as stored;
#: the metadata a mapping, its JSON text as stored (kept as it is, parsed only for its
#: field names), or None.
ChunkRow = tuple[int, str, int, str, int, int, int, Mapping[str, Any] | str | None]

_EMPTY_META = b"{}"
#: A run of digits orjson may not read exactly: it reads an integer beyond 64 bits as a
#: float (and refuses to write one), where the store's JSON keeps any integer.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_DIGITS = b"0123456789"


def _encoded(metadata: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(metadata)
    except TypeError:  # an integer beyond 64 bits
        return json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode()


def _decoded(data: bytes | bytearray) -> Any:
    # fewer than 19 digits in all (most metadata: counted in C, a quarter of a microsecond)
    # cannot hold such a run; only the rest is searched for one
    few = len(data) - len(data.translate(None, _DIGITS)) < 19
    return orjson.loads(data) if few or not _LONG_DIGITS.search(data) else json.loads(data)


class ChunkTable(Mapping[int, StoredChunk]):
    """Chunks by id, held in columns (see the module's docstring)."""

    __slots__ = (
        "_doc_codes",
        "_docs",
        "_ids",
        "_meta",
        "_meta_offsets",
        "_positions",
        "_text",
        "_text_offsets",
        "fields",
    )

    def __init__(
        self,
        ids: array[int],
        docs: list[str],
        doc_codes: array[int],
        positions: array[int],
        text: bytearray,
        text_offsets: array[int],
        meta: bytearray,
        meta_offsets: array[int],
        fields: frozenset[str],
    ) -> None:
        self._ids = ids  # sorted
        self._docs = docs
        self._doc_codes = doc_codes
        self._positions = positions  # ordinal, start, end, n_tokens: four per chunk
        self._text = text
        self._text_offsets = text_offsets
        self._meta = meta
        self._meta_offsets = meta_offsets
        #: Every metadata field some chunk has, and ``doc_id``: what filters may name.
        self.fields = fields

    @classmethod
    def build(cls, rows: Iterable[ChunkRow]) -> ChunkTable:
        """From chunk rows in ascending id order, each id once (``ORDER BY id`` over the
        chunk table's key), streamed: no row is kept once its columns have it. Raises
        ValueError on a row out of order."""
        ids = array("q")
        doc_index: dict[str, int] = {}
        docs: list[str] = []
        doc_codes = array("i")
        positions = array("q")
        text_offsets = array("q", [0])
        meta_offsets = array("q", [0])
        text, meta = bytearray(), bytearray()
        fields = {"doc_id"}
        for cid, doc_id, ordinal, body, start, end, n_tokens, metadata in rows:
            if ids and cid <= ids[-1]:
                raise ValueError(
                    f"chunk rows must come in ascending id order, each once: {cid} after {ids[-1]}"
                )
            ids.append(cid)
            code = doc_index.get(doc_id)
            if code is None:
                code = doc_index[doc_id] = len(docs)
                docs.append(doc_id)
            doc_codes.append(code)
            positions.extend((ordinal, start, end, n_tokens))
            text += body.encode()
            text_offsets.append(len(text))
            stored = None
            if isinstance(metadata, str):  # the stored JSON text (SQLite): kept as it is
                stored, metadata = metadata.encode(), orjson.loads(metadata)
                if metadata is not None and not isinstance(metadata, dict):
                    raise ValueError(f"the metadata of chunk {cid} is not a JSON object")
            if metadata:
                fields.update(metadata)
                meta += stored if stored is not None else _encoded(metadata)
            else:
                meta += _EMPTY_META
            meta_offsets.append(len(meta))
        return cls(
            ids,
            docs,
            doc_codes,
            positions,
            text,
            text_offsets,
            meta,
            meta_offsets,
            frozenset(fields),
        )

    # -- the mapping -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids)

    def __contains__(self, cid: object) -> bool:
        try:
            return self._position(cid) is not None  # type: ignore[arg-type]
        except TypeError:  # not an integer (numpy's are)
            return False

    def __getitem__(self, cid: int) -> StoredChunk:
        i = self._position(cid)
        if i is None:
            raise KeyError(cid)
        return self._chunk(i)

    def get(self, cid: int, default: Any = None) -> Any:  # one lookup, no KeyError raised
        i = self._position(cid)
        return default if i is None else self._chunk(i)

    def __repr__(self) -> str:
        return f"ChunkTable({len(self)} chunks, {len(self._docs)} documents)"

    # -- columns -----------------------------------------------------------------------------

    def doc_id(self, cid: int) -> str | None:
        """The document of chunk ``cid`` (None when the version has no such chunk)."""
        i = self._position(cid)
        return None if i is None else self._docs[self._doc_codes[i]]

    def field_values(self, name: str) -> Iterator[tuple[int, Any]]:
        """``(chunk id, value)`` of field ``name`` (``doc_id`` or a metadata field) for each
        chunk that has it, in id order; texts are not decoded."""
        if name == "doc_id":
            docs = self._docs
            for cid, code in zip(self._ids, self._doc_codes, strict=True):
                yield cid, docs[code]
            return
        if name not in self.fields:
            return
        meta, offsets = self._meta, self._meta_offsets
        for i, cid in enumerate(self._ids):
            start, end = offsets[i], offsets[i + 1]
            if end - start > 2:  # not "{}"
                value = _decoded(meta[start:end]).get(name)
                if value is not None:
                    yield cid, value

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns (texts and metadata included)."""
        arrays = (
            self._ids,
            self._doc_codes,
            self._positions,
            self._text_offsets,
            self._meta_offsets,
        )
        return (
            len(self._text)
            + len(self._meta)
            + sum(len(d) for d in self._docs)
            + sum(len(a) * a.itemsize for a in arrays)
        )

    # -- inside ------------------------------------------------------------------------------

    def _position(self, cid: int) -> int | None:
        ids = self._ids
        cid = operator.index(cid)  # a numpy integer compares slower at every step
        i = bisect.bisect_left(ids, cid)
        return i if i < len(ids) and ids[i] == cid else None

    def _chunk(self, i: int) -> StoredChunk:
        p, positions = 4 * i, self._positions
        t0, t1 = self._text_offsets[i], self._text_offsets[i + 1]
        m0, m1 = self._meta_offsets[i], self._meta_offsets[i + 1]
        return StoredChunk(
            self._ids[i],
            self._docs[self._doc_codes[i]],
            positions[p],
            self._text[t0:t1].decode(),
            positions[p + 1],
            positions[p + 2],
            positions[p + 3],
            _decoded(self._meta[m0:m1]) if m1 - m0 > 2 else {},
        )
