"""How complex a chat request is: a cheap classifier on its prompt, for routing rules
(``when: {complexity: complex}``, :mod:`conveyor.gateway.rules`).

::

    classifier = Complexity.default()
    classifier.classify(body["messages"])     # ("complex", 0.97)
    classifier.score("Prove that there are infinitely many primes.")   # 0.93

Ten handcrafted features of the last user message (:func:`features`): its length in
tokens (about four characters a token), code (fences, keywords, braces, SQL), reasoning
markers ("step by step", "prove", "derive", "trade-offs", "why"...), mathematics
(equations, operators, "solve", rates), several parts (numbered items, several
questions, "first... finally"), sentences, verbs that ask for something to be built
("write", "implement", "design", "plan"), constraints ("edge cases", "efficient",
"milestones"), numbers, and a short factual question ("what is...", "who wrote...").
A logistic regression over them, fitted offline (``scripts/gateway_complexity_fit.py``
on ``data/complexity_prompts.jsonl``, its train families) with its coefficients
committed in ``data/complexity_model.json``: nothing is learned at run time and nothing
but the standard library runs. A score of ``threshold`` (0.5) or more is ``complex``.

Only the first 1,500 and the last 500 characters are read for markers (the length counts
them all), with C routines of ``str`` (translate, split, count) and set intersections, so
a request's cost is bounded whatever its size: about 13 microseconds for a question, 45
for a page or a book (``benchmarks/gateway_complexity.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["FEATURES", "SCAN_CHARS", "Complexity", "Label", "features", "prompt_of"]

Label = Literal["simple", "complex"]

#: Characters of a prompt the markers are looked for in (its first 1,500 and last 500).
SCAN_CHARS = 2000

_MODEL = Path(__file__).resolve().parent / "data" / "complexity_model.json"

#: The features, in the order the model's weights are.
FEATURES = (
    "log_tokens",
    "code",
    "reasoning",
    "math",
    "parts",
    "sentences",
    "build",
    "constraints",
    "numbers",
    "short_question",
)

#: Where markers are looked for: the beginning and the end of a prompt (instructions come
#: first, or last after a context).
_HEAD, _TAIL = 1500, 500


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _deleting(chars: str) -> dict[int, int | None]:
    return str.maketrans("", "", chars)


# Every marker is counted with one pass of a C routine over the scanned text (translate,
# split, count) and set intersections over its words: no regular expression, no loop in
# Python over the characters or the words.
_CODE_MARKS = ("```", "=>", "()", "    ")
_CODE_CHARS = _deleting("{};")
_CODE_WORDS = _words(
    "def class return import function const var let print console select from where join "
    "async await lambda elif #include public static void null none true false"
)
_REASONING_WORDS = _words(
    "reason reasoning prove proof derive justify why analyze analyse evaluate assess compare "
    "critically argue demonstrate rigorous rigorously conclude weigh versus vs induction "
    "contradiction assumption assumptions tradeoff tradeoffs trade-off trade-offs "
    "step-by-step"
)
#: Phrases, each looked for only when its first word is in the prompt.
_REASONING_PHRASES = (("step", "step by step"), ("show", "show that"),
                      ("explain", "explain why"), ("explain", "explain how"),
                      ("explain", "explain each"), ("explain", "explain your"),
                      ("pros", "pros and cons"), ("only", "if and only if"),
                      ("work", "work through"))  # fmt: skip
_MATH_CHARS = _deleting("=^+*/%")
_MATH_SYMBOLS = _deleting("\u221a\u2211\u222b\u2264\u2265\u00b1\u00d7\u00f7")
_MATH_WORDS = _words(
    "solve equation equations integral derivative gradient hessian probability convex "
    "divisible integer integers prime primes interest compounded estimate km/h"
)
_ORDINALS = _words("first firstly second secondly third finally then also")
_BUILD_WORDS = _words(
    "write implement design create build architect sketch draft plan refactor develop "
    "construct optimize optimise roadmap"
)
_CONSTRAINT_WORDS = _words(
    "efficient efficiently complexity milestones milestone risks risk measure must without "
    "requirements requirement scale scales scaling bottleneck bottlenecks capacity "
    "dependencies handle detailed evidence"
)
_CONSTRAINT_PHRASES = (("edge", "edge case"), ("least", "at least"), ("unit", "unit test"),
                       ("principles", "first principles"), ("detail", "in detail"),
                       ("every", "for every"), ("all", "for all"))  # fmt: skip
_SHORT_STARTS = _words(
    "what who when where which is are can do does define translate give tell "
    "name suggest recommend fix correct proofread hi hello hey thanks thank ok good great "
    "round convert make rewrite shorten"
)
_HOW_SHORT = _words("many much long do old far big")
_DIGITS = _deleting("0123456789")
_ENDS = _deleting(".?!")
#: Punctuation read as a space when the prompt is cut into words ('-' and '/' stay).
_SPACES = str.maketrans({c: " " for c in ".,;:!?()[]{}<>\"'`*#=+|\\\n\t"})


def _scanned(text: str) -> str:
    if len(text) <= _HEAD + _TAIL:
        return text
    return text[:_HEAD] + "\n" + text[-_TAIL:]


def _removed(text: str, table: dict[int, int | None]) -> int:
    """How many characters of ``table`` ``text`` holds."""
    return len(text) - len(text.translate(table))


def _phrases(lower: str, vocabulary: set[str], phrases: tuple[tuple[str, str], ...]) -> int:
    return sum(1 for word, phrase in phrases if word in vocabulary and phrase in lower)


def features(text: str) -> tuple[float, ...]:
    """The :data:`FEATURES` of one prompt (see the module)."""
    scanned = _scanned(text)
    lower = scanned.lower()
    words = lower.translate(_SPACES).split()
    vocabulary = set(words)
    first = words[0] if words else ""
    short = len(words) <= 14 and (
        first in _SHORT_STARTS or (first == "how" and len(words) > 1 and words[1] in _HOW_SHORT)
    )
    code = sum(scanned.count(mark) for mark in _CODE_MARKS) + _removed(scanned, _CODE_CHARS)
    math_marks = _removed(lower, _MATH_CHARS)
    if not lower.isascii():
        math_marks += _removed(lower, _MATH_SYMBOLS)
    enumerated = ("1" in vocabulary and "2" in vocabulary) + (
        "b" in vocabulary and "c" in vocabulary
    )
    parts = max(0, lower.count("?") - 1) + len(vocabulary & _ORDINALS) + 2 * enumerated
    return (
        math.log1p(len(text) / 4.0),  # tokens, about four characters each
        float(min(6, code + len(vocabulary & _CODE_WORDS))),
        float(
            min(
                6,
                len(vocabulary & _REASONING_WORDS)
                + _phrases(lower, vocabulary, _REASONING_PHRASES),
            )
        ),
        float(min(6, math_marks + len(vocabulary & _MATH_WORDS))),
        float(min(6, parts)),
        math.log1p(min(30, _removed(lower, _ENDS))),
        float(min(4, len(vocabulary & _BUILD_WORDS))),
        float(
            min(
                6,
                len(vocabulary & _CONSTRAINT_WORDS)
                + _phrases(lower, vocabulary, _CONSTRAINT_PHRASES),
            )
        ),
        math.log1p(min(60, _removed(scanned, _DIGITS))),
        1.0 if short else 0.0,
    )


def prompt_of(messages: Any) -> str:
    """The text of a chat request's last user message (its text parts, for a list)."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(
                str(part.get("text", ""))
                for part in content
                if isinstance(part, dict) and part.get("type") == "text"
            )
        return ""
    return ""


@dataclass(frozen=True, slots=True)
class Complexity:
    """A fitted logistic regression over :func:`features` (see the module)."""

    means: tuple[float, ...]
    scales: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float = 0.5

    @classmethod
    def load(cls, path: Path = _MODEL) -> Complexity:
        model = json.loads(path.read_text())
        if tuple(model["features"]) != FEATURES:
            raise ValueError(f"{path}: fitted on other features than {FEATURES}")
        return cls(
            tuple(model["means"]),
            tuple(model["scales"]),
            tuple(model["weights"]),
            float(model["bias"]),
            float(model.get("threshold", 0.5)),
        )

    @classmethod
    def default(cls) -> Complexity:
        """The committed model (read once)."""
        global _DEFAULT
        if _DEFAULT is None:
            _DEFAULT = cls.load()
        return _DEFAULT

    def score(self, text: str) -> float:
        """The probability that ``text`` is a complex request."""
        z = self.bias
        for x, mean, scale, weight in zip(
            features(text), self.means, self.scales, self.weights, strict=True
        ):
            z += weight * (x - mean) / scale
        if z < -30.0:
            return 0.0
        return 1.0 / (1.0 + math.exp(-z))

    def label(self, score: float) -> Label:
        return "complex" if score >= self.threshold else "simple"

    def classify(self, messages: Any) -> tuple[Label, float]:
        """``(label, score)`` of a chat request's messages (its last user message)."""
        score = self.score(prompt_of(messages))
        return self.label(score), score


_DEFAULT: Complexity | None = None
