"""How complex a chat request is: a cheap classifier on its prompt, for routing rules
(``when: {complexity: complex}``, :mod:`conveyor.gateway.rules`).

::

    classifier = Complexity.default()
    classifier.classify(body["messages"])     # ("complex", 0.93)
    classifier.score("Prove that there are infinitely many primes.")   # 0.88

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

Only the first :data:`SCAN_CHARS` characters are scanned (the length counts them all),
so a request's cost is bounded whatever its size: a few microseconds for a question,
tens for a page (``benchmarks/gateway_complexity.py``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["FEATURES", "SCAN_CHARS", "Complexity", "Label", "features", "prompt_of"]

Label = Literal["simple", "complex"]

#: Characters of a prompt the markers are looked for in.
SCAN_CHARS = 4000

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

_CODE = re.compile(
    r"```|^\s{4}\S|\bdef \w+\(|\bclass \w+|\bfunction\b|=>|;\s*$|[{}]|\breturn\b|"
    r"\bimport \w|#include|\bselect\b.+\bfrom\b|\bfor \(|\bconsole\.|\w+\(\w*\)\.|\w\[\w+\]",
    re.MULTILINE,
)
_REASONING = re.compile(
    r"step[ -]by[ -]step|\breason|\bprove\b|\bproof\b|\bshow that\b|\bderive|\bjustify|"
    r"\bexplain (?:why|how|each|your|the algorithm)|\bwhy\b|\banaly[sz]e|\bevaluate|\bassess|"
    r"trade-?offs?|pros and cons|\bcompare|\bcritically|\bargue|\bdemonstrate|\brigorous|"
    r"\bwork through|\bconclude|\bweigh\b|\bversus\b|\bvs\.?\b|\bif and only if\b|"
    r"\binduction\b|\bcontradiction\b|\bassumptions?\b"
)
_MATH = re.compile(
    r"\d\s*[a-z]\b|[=^√∑∫≤≥±\u00d7\u00f7]|\d\s*[-+*/]\s*\d|\bsolve\b|\bequations?\b|\bintegral|"
    r"\bderivative|\bgradient|\bhessian|\bprobability|\bconvex|\bdivisible\b|\binteger|"
    r"\bprimes?\b|\binterest\b|\bcompounded|/h\b|\bper (?:year|second|day)\b|\bestimate"
)
_PARTS = re.compile(
    r"^\s*(?:\d+[.)]|[-*•]|\([a-z]\))\s|\s\d[.)]\s|\([a-e]\)\s|\bfirst(?:ly)?,|\bsecond(?:ly)?,|"
    r"\bthen\b|\bfinally\b|\band (?:then|also)\b|\beach part\b|\?",
    re.MULTILINE,
)
_SENTENCE = re.compile(r"[.!?](?:\s|$)")
_BUILD = re.compile(
    r"\b(?:write|implement|design|create|build|architect|sketch|draft|plan|refactor|"
    r"develop|construct|optimi[sz]e|break it into|roadmap)\b"
)
_CONSTRAINTS = re.compile(
    r"\bedge cases?\b|\befficient|\bcomplexity\b|\bunit tests?\b|\bmilestones?\b|\brisks?\b|"
    r"\bmeasure|\bat least\b|\bmust\b|\bwithout\b|\brequirements?\b|\bscal(?:e|es|ing)\b|"
    r"\bbottlenecks?\b|\bcapacity\b|\bdependenc|\bhandle\b|\bin detail\b|\bdetailed\b|"
    r"\bfirst principles\b|\bevidence\b|\bfor every\b|\bfor all\b"
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SHORT_QUESTION = re.compile(
    r"^(?:what(?:'s| is| are| does| do)|who|when|where|which|how (?:many|much|long|do you say)|"
    r"is|are|can|do|does|define|translate|give|tell|name|suggest|recommend|fix|correct|"
    r"proofread|hi|hello|hey|thanks|thank|ok|good|great|round|convert|make|rewrite|shorten)\b"
)


def _count(pattern: re.Pattern[str], text: str, most: int) -> int:
    found = 0
    for _ in pattern.finditer(text):
        found += 1
        if found >= most:
            break
    return found


def features(text: str) -> tuple[float, ...]:
    """The :data:`FEATURES` of one prompt (see the module)."""
    tokens = len(text) / 4.0
    scanned = text[:SCAN_CHARS]
    lower = scanned.lower()
    words = lower.count(" ") + 1
    short = 1.0 if words <= 14 and _SHORT_QUESTION.match(lower.lstrip()) else 0.0
    return (
        math.log1p(tokens),
        float(_count(_CODE, scanned, 6)),
        float(_count(_REASONING, lower, 6)),
        float(_count(_MATH, lower, 6)),
        float(max(0, _count(_PARTS, lower, 7) - 1)),  # a question is one part
        math.log1p(_count(_SENTENCE, scanned, 30)),
        float(_count(_BUILD, lower, 4)),
        float(_count(_CONSTRAINTS, lower, 6)),
        math.log1p(_count(_NUMBER, scanned, 30)),
        short,
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
