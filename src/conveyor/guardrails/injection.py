"""Prompt injection and jailbreak attempts, by weighted heuristics.

Each rule is a pattern for one family of attack, with a weight; a text's score is
``1 - prod(1 - weight)`` over the rules it matches (two weak signals add up, one strong
one is enough), and it is reported as ``INJECTION`` at or above the threshold (0.5 by
default). Families:

- instruction override: "ignore (all) (the) previous/above instructions", "disregard your
  rules", "forget everything you were told";
- system-prompt extraction: "reveal/print/repeat your system prompt / instructions";
- role-play jailbreaks: "you are now DAN", "developer mode", "act as an AI without
  restrictions", "pretend you have no rules";
- new-instructions framing: "new instructions:", fake ``system:`` turns, "### instruction";
- obfuscation: long base64 blocks, zero-width characters, unusual spacing of letters.

Rules match whole phrases with their verbs, so "please ignore the typo" or "the system
prompt is stored in a file" score low. Measured on the labelled set in
``conveyor/guardrails/data`` (see docs/guardrails.md).
"""

from __future__ import annotations

import re

from conveyor.guardrails.types import Finding

__all__ = ["RULES", "InjectionDetector"]

_ANY = r"(?:\w+\s+){0,3}"
#: (name, weight, pattern)
RULES: list[tuple[str, float, re.Pattern[str]]] = [
    (
        "override",
        0.9,
        re.compile(
            r"\b(?:ignore|disregard|forget|override|bypass|skip)\s+"
            + _ANY
            + r"(?:previous|prior|above|earlier|preceding|initial|original|system|your|the)\s+"
            + _ANY
            + r"(?:instructions?|rules?|prompts?|directives?|guidelines?|constraints?)",
            re.I,
        ),
    ),
    (
        "forget_all",
        0.7,
        re.compile(r"\bforget\s+(?:everything|all)\s+(?:you|that|above|previous)", re.I),
    ),
    (
        "extract_prompt",
        0.8,
        re.compile(
            r"\b(?:reveal|print|show|repeat|output|display|leak|tell me|what (?:is|are))\s+"
            + _ANY
            + r"(?:system|initial|hidden|secret|original)\s+(?:prompt|instructions?|message)",
            re.I,
        ),
    ),
    (
        "jailbreak_persona",
        0.8,
        re.compile(
            r"\b(?:you are now|from now on,? you are|act as|pretend (?:to be|you are)"
            r"|roleplay as)\s+"
            + _ANY
            + r"(?:DAN|jailbroken|unfiltered|uncensored|evil|unrestricted|without "
            r"(?:any )?(?:restrictions|limits|rules|filters))",
            re.I,
        ),
    ),
    (
        "dev_mode",
        0.7,
        re.compile(r"\b(?:developer|god|admin|debug) mode (?:enabled|on|activated)", re.I),
    ),
    (
        "no_rules",
        0.6,
        re.compile(
            r"\b(?:no|without|free (?:of|from))\s+(?:any\s+)?(?:ethical\s+|moral\s+|safety\s+)?"
            r"(?:restrictions|guidelines|filters|limitations|censorship)\b",
            re.I,
        ),
    ),
    (
        "fake_turn",
        0.5,
        re.compile(
            r"(?:^|\n)\s*(?:system|assistant)\s*:|<\|im_start\|>|\[/?INST\]|###\s*(?:system|instruction)",
            re.I,
        ),
    ),
    ("new_instructions", 0.5, re.compile(r"\bnew (?:instructions|rules|task)\s*:", re.I)),
    ("base64_block", 0.3, re.compile(r"[A-Za-z0-9+/]{80,}={0,2}")),
    ("zero_width", 0.4, re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")),
    ("spaced_letters", 0.3, re.compile(r"\b(?:[a-zA-Z] ){6,}[a-zA-Z]\b")),
]


#: Rule -> words one of which its match must contain (lower case): a rule whose words are
#: all absent is not run (a substring search is far cheaper than the pattern).
_ANCHORS: dict[str, tuple[str, ...]] = {
    "override": ("ignore", "disregard", "forget", "override", "bypass", "skip"),
    "forget_all": ("forget",),
    "extract_prompt": ("prompt", "instruction", "message"),
    "jailbreak_persona": ("you are", "act as", "pretend", "roleplay"),
    "dev_mode": (" mode",),
    "no_rules": ("restriction", "guideline", "filter", "limitation", "censorship"),
    "fake_turn": ("system", "assistant", "<|im_start|>", "inst]", "###"),
    "new_instructions": ("new ",),
}


class InjectionDetector:
    """Scores a text against :data:`RULES`; one ``INJECTION`` finding at or above the
    threshold, spanning the strongest rule's match."""

    name = "injection"

    def __init__(self, threshold: float = 0.5) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold {threshold!r}: a number above 0, at most 1")
        self.threshold = threshold

    def score(self, text: str) -> tuple[float, list[tuple[str, re.Match[str]]]]:
        left = 1.0
        matched = []
        lowered = text.lower()
        for name, weight, pattern in RULES:
            anchors = _ANCHORS.get(name)
            if anchors is not None and not any(a in lowered for a in anchors):
                continue
            match = pattern.search(text)
            if match is not None:
                left *= 1.0 - weight
                matched.append((name, match))
        return 1.0 - left, matched

    def scan(self, text: str) -> list[Finding]:
        score, matched = self.score(text)
        if score < self.threshold or not matched:
            return []
        weights = {name: weight for name, weight, _ in RULES}
        _, match = max(matched, key=lambda m: weights[m[0]])
        return [Finding(self.name, "INJECTION", match.start(), match.end(), round(score, 3))]
