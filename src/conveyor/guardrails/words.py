"""Words and phrases from a list, matched whole and in any case: profanity (a small list
committed in ``data/profanity.txt``) and a policy's banned topics.

A list becomes one compiled pattern shaped as a trie of its words (``ban(?:ana|d)``), so
a text is scanned once in C whatever the list's length, and a word matches only between
non-word characters: ``class`` does not match ``ass``, ``Scunthorpe`` does not match.
Runs of spaces inside a phrase match any whitespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from importlib import resources

from conveyor.guardrails.types import Finding

__all__ = ["TopicsDetector", "WordsDetector", "profanity_words", "trie_pattern"]


def trie_pattern(words: Iterable[str]) -> str:
    """A regular expression matching any of ``words`` (no boundaries), as a trie."""
    trie: dict[str, dict] = {}  # type: ignore[type-arg]
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict) -> str:  # type: ignore[type-arg]
        branches = []
        optional = "" in node
        for char in sorted(c for c in node if c):
            atom = r"\s+" if char == " " else re.escape(char)
            branches.append(atom + emit(node[char]))
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if optional:
            return body + "?" if len(branches) == 1 and len(body) == 1 else f"(?:{body})?"
        return body

    return emit(trie)


def _normal(words: Iterable[str]) -> list[str]:
    out = []
    for word in words:
        if not isinstance(word, str):
            raise ValueError(f"words: {word!r} is not a string")
        cleaned = " ".join(word.lower().split())
        if cleaned:
            out.append(cleaned)
    return out


class WordsDetector:
    """Finds the words of a list (see the module); each finding labelled ``label``."""

    def __init__(self, name: str, label: str, words: Iterable[str]) -> None:
        chosen = sorted(set(_normal(words)))
        if not chosen:
            raise ValueError(f"{name}: give at least one word")
        self.name = name
        self.label = label
        self.words = tuple(chosen)
        self._pattern = re.compile(r"(?<!\w)" + trie_pattern(chosen) + r"(?!\w)", re.I)

    def scan(self, text: str) -> list[Finding]:
        return [
            Finding(self.name, self.label, m.start(), m.end()) for m in self._pattern.finditer(text)
        ]


@cache
def profanity_words() -> tuple[str, ...]:
    """The committed profanity list (``data/profanity.txt``)."""
    text = resources.files("conveyor.guardrails").joinpath("data/profanity.txt").read_text()
    return tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


class TopicsDetector:
    """Banned topics: named rules, each a list of words or phrases; a finding's label is
    its rule's name upper-cased (``legal`` -> ``LEGAL``)."""

    name = "topics"

    def __init__(self, rules: dict[str, list[str]]) -> None:
        if not rules:
            raise ValueError("topics: give at least one rule (a name and its words)")
        self._rules = []
        for rule, words in rules.items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,39}", rule):
                raise ValueError(f"topics: rule name {rule!r}: a letter, then letters, digits, _")
            self._rules.append(WordsDetector(self.name, rule.upper(), words))
        #: Every rule's words (what a stream's scanner holds back the beginning of).
        self.words = tuple(sorted({w for r in self._rules for w in r.words}))

    def scan(self, text: str) -> list[Finding]:
        found = [f for rule in self._rules for f in rule.scan(text)]
        found.sort(key=lambda f: (f.start, -f.end))
        return found
