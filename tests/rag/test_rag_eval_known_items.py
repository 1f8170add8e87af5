"""The built-in docstring known-item set (conveyor.rag.known_items)."""

from __future__ import annotations

import pytest

from conveyor.errors import InvalidInputError
from conveyor.rag.known_items import docstring_set

MODULES = ("numpy", "scipy.linalg", "sklearn.preprocessing")


def test_the_set_is_deterministic() -> None:
    first = docstring_set(60, MODULES)
    second = docstring_set(60, MODULES)
    assert first.items == second.items
    assert first.ids == list(range(60))
    assert set(first.versions) == {"numpy", "scipy", "sklearn"}
    # a smaller set is a prefix of a bigger one: the selection order does not depend on size
    assert docstring_set(20, MODULES).items == first.items[:20]


def test_queries_are_summaries_and_documents_the_rest() -> None:
    s = docstring_set(60, MODULES)
    names = [i.name for i in s.items]
    assert len(set(names)) == len(names)
    assert len(set(s.texts)) == len(s.texts)  # identical docstrings kept once
    assert len({i.query for i in s.items}) == len(s.items)
    for item in s.items:
        assert not item.document.startswith(item.query)  # the summary line is cut off
        assert len(item.document.split()) >= 20
    queries = s.queries()
    assert queries[5].query == s.items[5].query and queries[5].relevant == (5,)
    dev, test = s.split(0.3)
    assert len(dev) + len(test) == 60 and dev and test
    assert not {q.query for q in dev} & {q.query for q in test}
    assert s.split(0.3) == (dev, test)


def test_bad_sizes() -> None:
    with pytest.raises(InvalidInputError, match="fewer than"):
        docstring_set(100_000, ("numpy.fft",))
    with pytest.raises(InvalidInputError):
        docstring_set(0)
