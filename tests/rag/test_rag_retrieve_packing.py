"""Context packing (conveyor.rag.packing) with the embedding model's real tokenizer."""

from __future__ import annotations

import pytest

from conveyor.errors import ConfigError, InvalidInputError
from conveyor.rag.embed.tokenizer import HFTokenizer, default_model_dir
from conveyor.rag.packing import pack, split_sentences, truncate_query
from conveyor.rag.types import Hit

DOC_A = (
    "Gradient boosting builds an additive model in a forward stage-wise fashion. "
    "Each stage fits a regression tree on the negative gradient of the loss. "
    "The learning rate shrinks the contribution of each tree. "
    "Subsampling the rows gives stochastic gradient boosting."
)
DOC_B = (
    "Principal component analysis projects the data onto the directions of largest "
    "variance. It is computed with a singular value decomposition of the centred data."
)


@pytest.fixture(scope="module")
def tok() -> HFTokenizer:
    return HFTokenizer.from_file(default_model_dir())


def hit(doc: str, text: str, doc_id: str, chunk_id: int, score: float, start: int) -> Hit:
    assert doc[start : start + len(text)] == text
    return Hit(
        chunk_id=chunk_id,
        doc_id=doc_id,
        text=text,
        score=score,
        start=start,
        end=start + len(text),
        metadata={"source": f"docs/{doc_id}.md"},
    )


def a_chunks() -> list[Hit]:
    # three overlapping chunks of DOC_A (the chunker's overlap), as offsets into it
    c0 = DOC_A[:120]
    c1 = DOC_A[100:200]
    c2 = DOC_A[180:]
    return [
        hit(DOC_A, c1, "a", 2, 0.9, 100),
        hit(DOC_A, c0, "a", 1, 0.5, 0),
        hit(DOC_A, c2, "a", 3, 0.4, 180),
    ]


def test_neighbours_merge_into_the_source_text(tok: HFTokenizer) -> None:
    packed = pack(a_chunks(), tokenizer=tok, budget_tokens=500)
    assert len(packed.citations) == 1
    cite = packed.citations[0]
    assert (cite.doc_id, cite.start, cite.end) == ("a", 0, len(DOC_A))
    assert set(cite.chunk_ids) == {1, 2, 3}
    assert cite.score == pytest.approx(0.9)
    assert cite.source == "docs/a.md"
    # the merged passage is the document's text, the overlaps not repeated
    assert packed.text == f"[1] docs/a.md\n{DOC_A}"
    assert packed.tokens == tok.count(packed.text)


def test_without_merging_each_chunk_is_a_passage(tok: HFTokenizer) -> None:
    packed = pack(a_chunks(), tokenizer=tok, budget_tokens=500, merge_neighbours=False)
    assert len(packed.citations) == 3
    for cite in packed.citations:
        assert cite.end - cite.start == len(DOC_A[cite.start : cite.end])
    # document order: positions ascending
    assert [c.start for c in packed.citations] == [0, 100, 180]
    by_score = pack(
        a_chunks(), tokenizer=tok, budget_tokens=500, merge_neighbours=False, order="score"
    )
    assert [c.score for c in by_score.citations] == [0.9, 0.5, 0.4]


def test_duplicates_are_dropped(tok: HFTokenizer) -> None:
    b = hit(DOC_B, DOC_B, "b", 10, 0.8, 0)
    same = Hit(11, "b-copy", DOC_B.upper().replace(" ", "  "), 0.7, 0, len(DOC_B))
    near = Hit(12, "b-near", DOC_B + " See also SVD.", 0.6, 0, len(DOC_B) + 14)
    packed = pack([b, same, near], tokenizer=tok, budget_tokens=500)
    assert [c.doc_id for c in packed.citations] == ["b"]
    kept_near = pack([b, same, near], tokenizer=tok, budget_tokens=500, dedupe_threshold=1.0)
    assert [c.doc_id for c in kept_near.citations] == ["b", "b-near"]


def test_budget_is_never_exceeded(tok: HFTokenizer) -> None:
    hits = [*a_chunks(), hit(DOC_B, DOC_B, "b", 10, 0.8, 0)]
    full = pack(hits, tokenizer=tok, budget_tokens=10_000)
    assert len(full.citations) == 2
    for budget in (30, 45, 60, full.tokens - 1, full.tokens):
        packed = pack(hits, tokenizer=tok, budget_tokens=budget)
        assert packed.tokens <= budget
        assert packed.tokens == tok.count(packed.text)  # parts' counts add up exactly
    # room for B (the smaller, 0.8) but not merged A (0.9): A is skipped, B still packed
    b_cost = tok.count(f"[1] docs/b.md\n{DOC_B}")
    packed = pack(hits, tokenizer=tok, budget_tokens=b_cost)
    assert [c.doc_id for c in packed.citations] == ["b"]
    assert packed.dropped == 1


def test_a_budget_below_the_best_passage_keeps_its_start(tok: HFTokenizer) -> None:
    packed = pack([hit(DOC_B, DOC_B, "b", 10, 0.8, 0)], tokenizer=tok, budget_tokens=12)
    assert packed.tokens <= 12
    assert packed.warnings and "longer than the budget" in packed.warnings[0]
    cite = packed.citations[0]
    assert packed.text.endswith(DOC_B[cite.start : cite.end])


def test_query_truncation_warns(tok: HFTokenizer) -> None:
    short, warning = truncate_query("mean of an array", tok, 254)
    assert short == "mean of an array" and warning is None
    long_query = " ".join(["variance"] * 400)
    cut, warning = truncate_query(long_query, tok, 254)
    assert tok.count(cut) == 254
    assert long_query.startswith(cut)
    assert warning is not None and "400 tokens" in warning and "254" in warning


def test_sentences_and_bad_input(tok: HFTokenizer) -> None:
    spans = split_sentences(DOC_A)
    assert len(spans) == 4
    assert DOC_A[spans[1][0] : spans[1][1]].startswith("Each stage")
    with pytest.raises(InvalidInputError):
        pack([], tokenizer=tok, budget_tokens=0)
    with pytest.raises(InvalidInputError):
        pack([], tokenizer=tok, budget_tokens=10, order="random")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="compression"):
        pack([], tokenizer=tok, budget_tokens=10, compress=True)
    assert pack([], tokenizer=tok, budget_tokens=10).text == ""


class _Counted:
    """The real tokenizer, counting its calls."""

    def __init__(self, tokenizer: HFTokenizer) -> None:
        self.tokenizer, self.calls = tokenizer, 0

    def spans(self, text: str) -> list[tuple[int, int]]:
        return self.tokenizer.spans(text)

    def count(self, text: str) -> int:
        self.calls += 1
        return self.tokenizer.count(text)


def test_remembered_counts_pack_the_same_and_count_a_text_once(tok: HFTokenizer) -> None:
    from conveyor.rag.packing import RememberedCounts

    hits = [*a_chunks(), hit(DOC_B, DOC_B, "b", 7, 0.7, 0)]
    counted = _Counted(tok)
    remembered = RememberedCounts(counted)
    for budget in (500, 60):
        want = pack(hits, tokenizer=tok, budget_tokens=budget)
        first = pack(hits, tokenizer=remembered, budget_tokens=budget)
        calls = counted.calls
        again = pack(hits, tokenizer=remembered, budget_tokens=budget)
        assert first == want and again == want
        assert calls > 0 and counted.calls == calls  # the second packing counted nothing
