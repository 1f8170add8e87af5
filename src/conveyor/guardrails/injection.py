"""Prompt injection and jailbreak attempts: weighted heuristics and a trained classifier.

**Heuristics.** Each rule is a pattern for one family of attack, with a weight; a text's
score is ``1 - prod(1 - weight)`` over the rules it matches (two weak signals add up, one
strong one is enough), and it counts at or above ``threshold`` (0.5). Families:

- instruction override: "ignore (all) (the) previous/above instructions", "disregard your
  rules", "forget everything you were told", and the same in French, Spanish, German,
  Italian and Dutch;
- system-prompt extraction: "reveal/print/repeat your system prompt / instructions";
- role-play jailbreaks: "you are now DAN", "act as an AI without restrictions", "pretend
  you have no rules"; developer/admin/debug mode "enabled";
- refusal suppression ("never refuse", "do not apologize") and prefix injection ("start
  your answer with 'Sure, here is'");
- indirect injection: text addressed to the model inside a document ("note to the AI",
  "if you are an AI model reading this");
- new-instructions framing: "new instructions:", fake ``system:`` turns, chat-template
  tokens (``<|im_start|>``, ``[INST]``), "### instruction";
- obfuscation: base64 and hex blocks and ROT13 text are decoded and the rules run on what
  they hide (a hidden instruction scores 0.9); zero-width characters, look-alike letters
  (a Cyrillic i for a Latin one) and full-width forms are folded away before the rules run
  (:func:`conveyor.guardrails.classifier.normalize`), and their presence is itself a weak
  signal; letters spaced out one by one.

Rules match whole phrases with their verbs, so "please ignore the typo" or "the system
prompt is stored in a file" score low.

**Classifier.** :mod:`conveyor.guardrails.classifier`: TF-IDF on character n-grams and
words with a logistic regression, trained on the labelled set committed with the package;
its probability counts at or above ``classifier_threshold`` (default: the one stored with
the model, chosen for at most 1% false positives by cross-validation on its training part).

``mode``: ``heuristics``, ``classifier`` or ``both`` (default: a text is an injection when
either says so). Measured on the held-out part of the labelled set in docs/guardrails.md.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from typing import Literal

from conveyor.guardrails.classifier import InjectionClassifier, load, normalize
from conveyor.guardrails.types import Finding

__all__ = ["MODES", "RULES", "InjectionDetector"]

Mode = Literal["heuristics", "classifier", "both"]
MODES: tuple[Mode, ...] = ("heuristics", "classifier", "both")

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
        re.compile(
            r"\b(?:developer|god|admin|debug|sudo|jailbreak) mode(?::| is)? (?:enabled|activated"
            r"|(?:turned |switched )?on(?=\s*(?:[.!:;,\n]|$)))",
            re.I,
        ),
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
    (
        "override_foreign",
        0.9,
        re.compile(
            r"\b(?:ignor(?:ez|e|a|er|iere|ieren|eer)|oubliez|olvida|vergiss|negeer|dimentica)\s+"
            r"(?:\w+\s+){0,3}(?:instructions?|instrucciones|anweisungen|istruzioni|instructies"
            r"|r[eè]gles|reglas|regeln|regole|regels)",
            re.I,
        ),
    ),
    (
        "refusal_suppression",
        0.6,
        re.compile(
            r"\b(?:never|do not|don't|you (?:must|will|can) not|you are not allowed to)\s+"
            r"(?:refuse|apologi[sz]e|say (?:you|that you) can(?:'|no)t|mention (?:any )?"
            r"(?:polic|guideline|ethic|moral)|include (?:any )?(?:warnings?|disclaimers?))",
            re.I,
        ),
    ),
    (
        "prefix_injection",
        0.6,
        re.compile(
            r"\b(?:start|begin) your (?:answer|reply|response|output) with\s+['\"“]"
            r"(?:sure|absolutely|of course|certainly|yes)",
            re.I,
        ),
    ),
    (
        "indirect",
        0.8,
        re.compile(
            r"\b(?:(?:note|message|instructions?) (?:to|for) (?:the )?(?:ai|assistant|llm|"
            r"language model|chatbot)|if you are an? (?:ai|llm|language model|assistant)"
            r"|(?:ai|llm|assistant|language model)s? (?:reading|processing|summari[sz]ing) this)",
            re.I,
        ),
    ),
    ("base64_block", 0.3, re.compile(r"[A-Za-z0-9+/]{80,}={0,2}")),
    ("zero_width", 0.4, re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")),
    ("mixed_script", 0.4, re.compile(r"\b(?=\w*[a-zA-Z])(?=\w*[\u0370-\u03ff\u0400-\u04ff])\w+")),
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
    "override_foreign": ("igno", "oubli", "olvid", "vergiss", "negeer", "dimentic"),
    "refusal_suppression": ("never", "not", "n't"),
    "prefix_injection": ("start your", "begin your"),
    "indirect": ("ai", "assistant", "llm", "language model", "chatbot"),
}
#: Rules that look at the text as it came, not as normalized (what they look for is what
#: normalizing takes away).
_RAW = frozenset({"zero_width", "mixed_script"})
_STRONG = 0.6
#: Encoded blocks: base64 (24+ characters) and hex (12+ bytes).
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{24,}={0,2}")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}){12,}\b")
_ROT13 = re.compile(r"\brot[ -]?13\b", re.I)


def _decoded(block: str, kind: str) -> str | None:
    try:
        raw = (
            bytes.fromhex(block)
            if kind == "hex"
            else base64.b64decode(block + "=" * (-len(block) % 4))
        )
        text = raw.decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    printable = sum(c.isprintable() or c.isspace() for c in text)
    return text if text and printable / len(text) > 0.95 else None


class InjectionDetector:
    """Scores a text with the heuristics and the classifier (see the module); one
    ``INJECTION`` finding when one of them counts, spanning the strongest rule's match or
    the classifier's most likely window, its score the higher of the two."""

    name = "injection"

    def __init__(
        self,
        mode: Mode = "both",
        threshold: float = 0.5,
        classifier_threshold: float | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
        for setting, value in (
            ("threshold", threshold),
            ("classifier_threshold", classifier_threshold),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1
            ):
                raise ValueError(f"{setting} {value!r}: a number above 0, at most 1")
        self.mode = mode
        self.threshold = float(threshold)
        self.classifier: InjectionClassifier | None = None
        self.classifier_threshold = 1.0
        if mode != "heuristics":
            self.classifier = load()
            self.classifier_threshold = (
                self.classifier.threshold
                if classifier_threshold is None
                else float(classifier_threshold)
            )

    def _rules(
        self, text: str, lowered: str, raw: bool
    ) -> tuple[float, list[tuple[str, float, re.Match[str]]]]:
        left = 1.0
        matched = []
        for name, weight, pattern in RULES:
            if (name in _RAW) != raw:
                continue
            anchors = _ANCHORS.get(name)
            if anchors is not None and not any(a in lowered for a in anchors):
                continue
            match = pattern.search(text)
            if match is not None:
                left *= 1.0 - weight
                matched.append((name, weight, match))
        return left, matched

    def score(self, text: str) -> tuple[float, tuple[int, int] | None, list[str]]:
        """The heuristics' score of ``text``, the span of its strongest match (None when
        nothing matched) and the rules that matched."""
        normal = normalize(text)
        same = normal == text
        left, matched = self._rules(normal, normal.lower(), raw=False)
        if not text.isascii():
            raw_left, raw_matched = self._rules(text, "", raw=True)
            left *= raw_left
            matched += raw_matched
        spans = {
            id(m): (m.start(), m.end()) if same or name in _RAW else (0, len(text))
            for name, _, m in matched
        }
        # what encodings hide
        hidden: list[tuple[str, tuple[int, int]]] = []
        for kind, pattern in (("base64", _BASE64), ("hex", _HEX)):
            for match in pattern.finditer(normal):
                decoded = _decoded(match.group(), kind)
                if decoded is not None:
                    hidden.append((decoded, match.span() if same else (0, len(text))))
        if _ROT13.search(normal):
            hidden.append((codecs.decode(normal, "rot13"), (0, len(text))))
        for decoded, span in hidden:
            _, inner = self._rules(decoded, decoded.lower(), raw=False)
            if any(weight >= _STRONG for _, weight, _ in inner):
                left *= 0.1
                encoded = re.search(r"[\s\S]+", normal[span[0] : span[1]] if same else normal)
                assert encoded is not None
                matched.append(("encoded_instruction", 0.9, encoded))
                spans[id(encoded)] = span
                break
        if not matched:
            return 1.0 - left, None, []
        _, _, strongest = max(matched, key=lambda m: m[1])
        return 1.0 - left, spans[id(strongest)], [name for name, _, _ in matched]

    def scan(self, text: str) -> list[Finding]:
        heuristic, span, _ = self.score(text) if self.mode != "classifier" else (0.0, None, [])
        best = 0.0
        window = (0, len(text))
        if self.classifier is not None:
            best, start, end = self.classifier.best(text)
            window = (start, end) if normalize(text) == text else (0, len(text))
        flagged_rules = span is not None and heuristic >= self.threshold
        flagged_model = best >= self.classifier_threshold
        if not (flagged_rules or flagged_model):
            return []
        start, end = span if flagged_rules and span is not None else window
        return [
            Finding(
                self.name,
                "INJECTION",
                start,
                end,
                round(max(heuristic, best) if flagged_model else heuristic, 3),
            )
        ]
