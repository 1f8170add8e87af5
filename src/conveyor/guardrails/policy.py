"""A guardrail policy: an ordered list of checks, each a detector with an action.

::

    gateway:
      guardrails:
        policies:
          default:
            input:
              - {detector: injection, action: block}
              - {detector: secrets, action: block}
              - {detector: pii, action: redact, entities: [CREDIT_CARD, IBAN, EMAIL, PHONE]}
              - {detector: topics, action: flag, words: [diagnosis, lawsuit]}
            output:
              - {detector: secrets, action: redact}
              - {detector: pii, action: redact}
              - {detector: profanity, action: block}
        models: {fast: default, smart: default}     # which alias runs which policy

Checks run in order on the text; the first ``block`` ends the run. ``redact`` on the input
replaces each match by a pseudonym (``<CREDIT_CARD_1>``, the same value always the same
one in a call) kept in a :class:`Vault`, and the answer's pseudonyms are put back before
the caller sees it, so the upstream never sees the value and the user gets it back;
``redact`` on the output replaces a match by ``[REDACTED:LABEL]``. ``flag`` and ``log``
record a decision and change nothing (a flagged call is counted for review in the
event's decisions). Every decision names the check, the label, the action, where, the
score and the matched span masked (``Finding.redacted``), never the value itself.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from conveyor.guardrails.types import Action, Detector, Finding

__all__ = ["Check", "CheckSpec", "GuardrailsSpec", "Policy", "Vault", "build_detector"]

Where = Literal["input", "output"]

_PROFANITY = (
    "fuck", "fucking", "shit", "bullshit", "bitch", "bastard", "asshole", "dick", "cunt",
    "motherfucker", "damn", "crap", "piss", "slut", "whore",
)  # fmt: skip


class WordsDetector:
    """Whole words or phrases from a list, case-insensitive (profanity, banned topics)."""

    def __init__(self, name: str, label: str, words: list[str]) -> None:
        if not words:
            raise ValueError(f"{name}: give at least one word")
        self.name = name
        self.label = label
        alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        self._pattern = re.compile(rf"\b(?:{alternatives})\b", re.I)

    def scan(self, text: str) -> list[Finding]:
        return [
            Finding(self.name, self.label, m.start(), m.end()) for m in self._pattern.finditer(text)
        ]


class CheckSpec(BaseModel):
    """One check of a policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: Literal["pii", "secrets", "injection", "profanity", "topics"] = Field(
        description="What it looks for."
    )
    action: Action = Field(description="block, redact, flag or log.")
    entities: list[str] = Field(
        default_factory=list, description="pii: the labels to find (empty: all)."
    )
    words: list[str] = Field(
        default_factory=list, description="topics: the words or phrases; profanity: extra ones."
    )
    label: str = Field("TOPIC", description="topics: the label its findings carry.")
    threshold: float = Field(0.5, gt=0, le=1, description="injection: the score that counts.")


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: list[CheckSpec] = Field(default_factory=list, description="Checks on the prompt.")
    output: list[CheckSpec] = Field(default_factory=list, description="Checks on the answer.")

    @model_validator(mode="after")
    def _redact_where_it_can(self) -> PolicySpec:
        for check in self.input:
            if check.action == "redact" and check.detector not in ("pii", "secrets"):
                raise ValueError(f"input: {check.detector} cannot redact (block, flag or log)")
        return self


class GuardrailsSpec(BaseModel):
    """``gateway.guardrails``: named policies and which model aliases run which."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policies: dict[str, PolicySpec] = Field(default_factory=dict, description="By name.")
    models: dict[str, str] = Field(
        default_factory=dict, description="Model alias (or deployment) -> policy name."
    )
    default: str | None = Field(None, description="The policy of every other model.")
    window_chars: int = Field(
        64,
        ge=8,
        le=4096,
        description="Streams: characters held back so a match across chunks is caught "
        "before it is sent.",
    )

    @model_validator(mode="after")
    def _known(self) -> GuardrailsSpec:
        for model, policy in self.models.items():
            if policy not in self.policies:
                raise ValueError(f"models: {model!r} names no policy {policy!r}")
        if self.default is not None and self.default not in self.policies:
            raise ValueError(f"default: no policy {self.default!r}")
        return self

    @property
    def any(self) -> bool:
        return bool(self.policies) and (bool(self.models) or self.default is not None)


def build_detector(spec: CheckSpec) -> Detector:
    """The detector a check names, with its settings."""
    if spec.detector == "pii":
        from conveyor.guardrails.pii import PiiDetector

        return PiiDetector(spec.entities or None)
    if spec.detector == "secrets":
        from conveyor.guardrails.secrets import SecretsDetector

        return SecretsDetector()
    if spec.detector == "injection":
        from conveyor.guardrails.injection import InjectionDetector

        return InjectionDetector(spec.threshold)
    if spec.detector == "profanity":
        return WordsDetector("profanity", "PROFANITY", [*_PROFANITY, *spec.words])
    return WordsDetector("topics", spec.label, spec.words)


class Vault:
    """Pseudonyms of one call: value <-> ``<LABEL_N>``, the same value the same one."""

    _PLACEHOLDER = re.compile(r"<([A-Z][A-Z_]*)_(\d+)>")

    def __init__(self) -> None:
        self._by_value: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._counts: Counter[str] = Counter()

    def __bool__(self) -> bool:
        return bool(self._by_placeholder)

    def placeholder(self, label: str, value: str) -> str:
        found = self._by_value.get((label, value))
        if found is None:
            self._counts[label] += 1
            found = f"<{label}_{self._counts[label]}>"
            self._by_value[(label, value)] = found
            self._by_placeholder[found] = value
        return found

    def restore(self, text: str) -> str:
        """The text with every known pseudonym replaced by its value."""
        if not self._by_placeholder or "<" not in text:
            return text
        return self._PLACEHOLDER.sub(lambda m: self._by_placeholder.get(m.group(), m.group()), text)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    detector: Detector
    action: Action


class Policy:
    """The checks of one policy, built once (see the module)."""

    def __init__(self, name: str, spec: PolicySpec) -> None:
        self.name = name
        self.input = [self._check(i, c) for i, c in enumerate(spec.input)]
        self.output = [self._check(i, c) for i, c in enumerate(spec.output)]

    @staticmethod
    def _check(index: int, spec: CheckSpec) -> Check:
        detector = build_detector(spec)
        return Check(f"{spec.detector}#{index}", detector, spec.action)

    def run(
        self, text: str, where: Where, vault: Vault | None = None
    ) -> tuple[str, list[dict[str, Any]], dict[str, Any] | None]:
        """The text to pass on, the decisions, and the blocking decision (None: passed)."""
        decisions: list[dict[str, Any]] = []
        for check in self.input if where == "input" else self.output:
            findings = check.detector.scan(text)
            if not findings:
                continue
            for finding in findings:
                decisions.append(
                    {
                        "check": check.name,
                        "detector": finding.detector,
                        "label": finding.label,
                        "action": check.action,
                        "where": where,
                        "score": finding.score,
                        "span": finding.redacted(text),
                    }
                )
            if check.action == "block":
                return text, decisions, decisions[-1]
            if check.action == "redact":
                text = _redacted(text, findings, vault if where == "input" else None)
        return text, decisions, None


def _redacted(text: str, findings: list[Finding], vault: Vault | None) -> str:
    for finding in sorted(findings, key=lambda f: f.start, reverse=True):
        value = text[finding.start : finding.end]
        if vault is not None:
            replacement = vault.placeholder(finding.label, value)
        else:
            replacement = f"[REDACTED:{finding.label}]"
        text = text[: finding.start] + replacement + text[finding.end :]
    return text
