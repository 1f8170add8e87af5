"""ChunkTable: a loaded version's chunks in columns, behaving as the mapping it replaced."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from conveyor.rag.chunk_table import ChunkTable
from conveyor.rag.collections import StoredChunk

ROWS = [
    (3, "guide.md", 0, "Intro: héllo wörld ✓", 0, 20, 6, {"title": "Guide", "page": 1}),
    (7, "guide.md", 1, "Second part", 20, 31, 2, {"title": "Guide", "section": ["A", "b"]}),
    (12, "faq.md", 0, "", 0, 0, 0, None),
    (40, "gdpr.md", 0, "Delete me", 0, 9, 2, {}),
]


def _expected(row: tuple) -> StoredChunk:  # type: ignore[type-arg]
    cid, doc, ordinal, text, start, end, tokens, meta = row
    return StoredChunk(cid, doc, ordinal, text, start, end, tokens, meta or {})


def test_it_is_the_mapping_of_id_to_chunk_it_was_built_from() -> None:
    table = ChunkTable.build(iter(ROWS))
    assert len(table) == 4
    assert list(table) == [3, 7, 12, 40]
    for row in ROWS:
        assert table[row[0]] == _expected(row)
    assert dict(table.items()) == {row[0]: _expected(row) for row in ROWS}
    assert table[3].text == "Intro: héllo wörld ✓"  # UTF-8 offsets, not characters
    assert table[7].metadata == {"title": "Guide", "section": ["A", "b"]}
    assert table[12].metadata == {} and table[12].text == ""


def test_metadata_as_stored_json_text_builds_the_same_table() -> None:
    """The store hands SQLite's metadata over as its JSON text (no decode and re-encode)."""
    import json

    as_text = [(*row[:7], json.dumps(row[7]) if row[7] is not None else None) for row in ROWS]
    table, reference = ChunkTable.build(as_text), ChunkTable.build(ROWS)
    assert dict(table.items()) == dict(reference.items())
    assert table.fields == reference.fields == {"doc_id", "title", "page", "section"}
    assert list(table.field_values("title")) == [(3, "Guide"), (7, "Guide")]
    with pytest.raises(ValueError, match="metadata of chunk 5 is not a JSON object"):
        ChunkTable.build([(5, "d.md", 0, "x", 0, 1, 1, "[1, 2]")])


def test_stored_json_null_metadata_is_no_metadata_as_its_decoded_none_was() -> None:
    # A row whose metadata column holds JSON null (the column type decoded it to None,
    # which the table took as no metadata): read as text, it must load the same way.
    table = ChunkTable.build(
        [(5, "d.md", 0, "x", 0, 1, 1, "null"), (6, "d.md", 1, "y", 1, 2, 1, None)]
    )
    assert table[5].metadata == {} and table[6].metadata == {}
    assert table.fields == {"doc_id"}


def test_integers_beyond_64_bits_load_exactly_from_text_and_from_a_mapping() -> None:
    """The store writes metadata with the standard library's JSON, which keeps any integer;
    orjson reads one beyond 64 bits as a float and refuses to write it. A front-matter id
    of 30 digits must come back as the same int, whether the store hands over its JSON text
    (SQLite) or a decoded mapping (PostgreSQL's driver), as ``Collections.chunks`` gives."""
    import json

    big = 123456789012345678901234567890
    meta = {"ticket": big, "tags": [big, 1], "title": "Big"}
    for stored in (json.dumps(meta), meta):
        table = ChunkTable.build(
            [(5, "d.md", 0, "x", 0, 1, 1, stored), (6, "e.md", 0, "y", 0, 1, 1, None)]
        )
        assert table[5].metadata == meta
        assert type(table[5].metadata["ticket"]) is int
        assert list(table.field_values("ticket")) == [(5, big)]
        assert table[6].metadata == {}


def test_lookups_of_absent_ids_and_numpy_ids() -> None:
    table = ChunkTable.build(ROWS)
    assert 7 in table and np.int64(7) in table
    for absent in (0, 4, 41, -1, "7", 7.5, None):
        assert absent not in table
    with pytest.raises(KeyError):
        table[5]
    assert table.get(99) is None
    assert table.doc_id(40) == "gdpr.md" and table.doc_id(41) is None


def test_fields_and_their_values_without_the_texts() -> None:
    table = ChunkTable.build(ROWS)
    assert table.fields == {"doc_id", "title", "page", "section"}
    assert list(table.field_values("title")) == [(3, "Guide"), (7, "Guide")]
    assert list(table.field_values("doc_id")) == [
        (3, "guide.md"),
        (7, "guide.md"),
        (12, "faq.md"),
        (40, "gdpr.md"),
    ]
    assert list(table.field_values("page")) == [(3, 1)]
    assert list(table.field_values("nowhere")) == []


def test_rows_out_of_order_or_repeated_are_refused() -> None:
    with pytest.raises(ValueError, match="ascending id order"):
        ChunkTable.build([ROWS[1], ROWS[0]])
    with pytest.raises(ValueError, match="ascending id order"):
        ChunkTable.build([ROWS[0], ROWS[0]])


def test_an_empty_version() -> None:
    table = ChunkTable.build([])
    assert len(table) == 0 and list(table) == [] and 1 not in table
    assert table.fields == {"doc_id"}


def test_a_large_table_is_a_handful_of_objects_for_the_collector() -> None:
    # The point of the columns: 20,000 chunks are not 20,000 objects (nor 100,000 with
    # their texts, documents and metadata) for every full collection to walk.
    rows = [
        (i, f"doc-{i // 10}", i % 10, f"text of chunk {i} " * 20, 0, 100, 25, {"n": i % 7})
        for i in range(20_000)
    ]
    gc.collect()
    before = len(gc.get_objects())
    table = ChunkTable.build(iter(rows))
    del rows
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert len(table) == 20_000 and table[19_999].metadata == {"n": 19_999 % 7}
    text_bytes = sum(len(f"text of chunk {i} " * 20) for i in range(20_000))
    assert text_bytes < table.nbytes < text_bytes * 1.5
