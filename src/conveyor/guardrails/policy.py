"""A guardrail policy: an ordered list of checks, each a detector, where it applies, and
the action taken on what it finds.

::

    gateway:
      guardrails:
        policies:
          default:
            - {detector: injection, where: input, action: block}
            - {detector: secrets, action: block}                 # where: both (the default)
            - {detector: pii, action: redact, entities: [CREDIT_CARD, IBAN, EMAIL, PHONE]}
            - {detector: topics, where: input, action: flag, name: legal, words: [lawsuit]}
            - {detector: profanity, where: output, action: block}
            - {detector: groundedness, action: flag, threshold: 0.5}   # output only
            - {detector: json_schema, action: block}                   # output only
          strict:
            - {detector: pii, action: block, min_score: 0.9}
        models: {fast: default, smart: default}   # model alias (or deployment) -> policy
        keys: {intern-app: strict}                # an API key's name -> policy
        teams: {}                                 # the x-conveyor-team header -> policy
        default: null                             # the policy of every other call
        window_chars: 64                          # streams: what an opaque detector holds

A check names a detector of :data:`conveyor.guardrails.detectors.DETECTORS` (``pii``,
``secrets``, ``injection``, ``profanity``, ``topics``) or an answer check of
:mod:`conveyor.guardrails.answers` (``groundedness``, ``json_schema``: output only), or one
added with :func:`register`; its other keys are the detector's settings. ``where`` is
``input`` (the user's and tools' messages), ``output`` (each choice of the answer) or
``both`` (the default; ``output`` for answer checks). ``min_score`` (0 to 1) drops the
findings the detector is less sure of. ``name`` (default: the detector's) names the check
in decisions, errors and the ``conveyor_guardrail_seconds{check}`` metric; two checks of a
policy cannot share one.

A call runs one policy: its key's, else its team's, else its model's (the alias the
request named, or the deployment), else ``default``, else none. Checks run in order on the
text as the previous ones left it:

- ``block``: the run stops there (input: 400 ``guardrail_blocked``; output: the content
  withheld, ``finish_reason: content_filter``);
- ``redact``: input: each match becomes a pseudonym (``<CREDIT_CARD_1>``, the same value
  the same one within the call) kept in the call's :class:`Vault`, and the answer's
  pseudonyms are put back before the caller sees it; output: ``[REDACTED:LABEL]``;
- ``flag``: the call goes to the review queue (:mod:`conveyor.guardrails.review`) and the
  caller gets a "pending review" answer;
- ``log``: recorded, nothing changes.

Every decision names the check, detector, label, action, where, score and the matched span
masked (:meth:`Finding.redacted`), never the value.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.guardrails.pii import Vault, redact
from conveyor.guardrails.types import Action, Detector, Finding

__all__ = [
    "Check",
    "CheckSpec",
    "GuardrailsSpec",
    "Policy",
    "PolicySpec",
    "Run",
    "Vault",
    "known_checks",
    "register",
]

Where = Literal["input", "output", "both"]
Side = Literal["input", "output"]

#: Detectors added at run time (:func:`register`), by name.
_REGISTERED: dict[str, Callable[[dict[str, Any]], Any]] = {}
_GENERATION = 0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def register(name: str, factory: Callable[[dict[str, Any]], Any]) -> None:
    """Make ``name`` a detector policies may use: ``factory(settings)`` builds it (a
    :class:`~conveyor.guardrails.types.Detector`, or an answer check with ``bind``)."""
    global _GENERATION
    _REGISTERED[name] = factory
    _GENERATION += 1  # detectors built before are not reused for that name


def known_checks() -> dict[str, Callable[[dict[str, Any]], Any]]:
    """Every detector a check may name: the built-in ones, the answer checks, the
    registered ones."""
    from conveyor.guardrails.answers import ANSWER_CHECKS
    from conveyor.guardrails.detectors import DETECTORS

    return {**DETECTORS, **ANSWER_CHECKS, **_REGISTERED}


class CheckSpec(BaseModel):
    """One check of a policy; keys other than its fields are the detector's settings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    detector: str = Field(description="A detector's name (pii, secrets, injection, ...).")
    action: Action = Field(description="block, redact, flag (for review) or log.")
    where: Where | None = Field(
        None, description="input, output or both (default: both; output for answer checks)."
    )
    min_score: float = Field(
        0.0, ge=0, le=1, description="Findings the detector is less sure of are dropped."
    )
    name: str | None = Field(None, description="The check's name (default: the detector's).")

    @property
    def settings(self) -> dict[str, Any]:
        """The detector's settings: the keys that are not the check's own."""
        return dict(self.model_extra or {})

    @property
    def check_name(self) -> str:
        return self.name or self.detector

    @property
    def sides(self) -> tuple[Side, ...]:
        where = self.where or ("output" if _answer_check(self.detector) else "both")
        return ("input", "output") if where == "both" else (where,)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"name {value!r}: 1 to 64 letters, digits or _ . : -")
        return value

    @model_validator(mode="after")
    def _buildable(self) -> CheckSpec:
        known = known_checks()
        if self.detector not in known:
            raise ValueError(f"no detector {self.detector!r}: known {', '.join(sorted(known))}")
        if _answer_check(self.detector):
            if "input" in self.sides:
                raise ValueError(f"{self.detector} checks answers: where is output")
            if self.detector == "json_schema" and self.action == "redact":
                raise ValueError("json_schema cannot redact (block, flag or log)")
        build(self)  # the settings, checked by the detector itself
        return self


def _answer_check(detector: str) -> bool:
    from conveyor.guardrails.answers import ANSWER_CHECKS

    return detector in ANSWER_CHECKS


def build(spec: CheckSpec) -> Any:
    """The detector a check names, built with its settings (a bad one: ValueError). A
    detector is pure, so one built for the same settings is shared (the spec's check and
    the gateway's policy build it once)."""
    try:
        settings = json.dumps(spec.settings, sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"{spec.check_name}: settings are JSON values ({exc})") from None
    try:
        return _built(spec.detector, settings, _GENERATION)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{spec.check_name}: {exc}") from None


@lru_cache(maxsize=256)
def _built(detector: str, settings: str, generation: int) -> Any:
    return known_checks()[detector](json.loads(settings))


class PolicySpec(BaseModel):
    """A policy written as its input and output checks (each check's ``where`` implied)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: list[dict[str, Any]] = Field(default_factory=list, description="Checks of prompts.")
    output: list[dict[str, Any]] = Field(default_factory=list, description="Checks of answers.")

    def checks(self) -> list[CheckSpec]:
        return [
            *(CheckSpec.model_validate({**c, "where": "input"}) for c in self.input),
            *(CheckSpec.model_validate({**c, "where": "output"}) for c in self.output),
        ]


def _checks(value: Any) -> Any:
    """A policy: a list of checks, or ``{input: [...], output: [...]}``."""
    if isinstance(value, dict) and set(value) <= {"input", "output"}:
        return PolicySpec.model_validate(value).checks()
    return value


class GuardrailsSpec(BaseModel):
    """``gateway.guardrails``: named policies and which calls run which (see the module)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policies: dict[str, list[CheckSpec]] = Field(
        default_factory=dict, description="By name: the ordered checks."
    )
    models: dict[str, str] = Field(
        default_factory=dict, description="Model alias (or deployment) -> policy name."
    )
    keys: dict[str, str] = Field(default_factory=dict, description="API key name -> policy name.")
    teams: dict[str, str] = Field(
        default_factory=dict, description="Team (x-conveyor-team) -> policy name."
    )
    default: str | None = Field(None, description="The policy of every other call.")
    window_chars: int = Field(
        64,
        ge=8,
        le=4096,
        description="Streams: characters held back for a detector that cannot tell where a "
        "match may begin (a match up to this long is seen whole before any of it is sent).",
    )

    @field_validator("policies", mode="before")
    @classmethod
    def _policy_forms(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {name: _checks(checks) for name, checks in value.items()}
        return value

    @model_validator(mode="after")
    def _known(self) -> GuardrailsSpec:
        for name, checks in self.policies.items():
            seen = Counter(c.check_name for c in checks)
            twice = [n for n, count in seen.items() if count > 1]
            if twice:
                raise ValueError(
                    f"policies.{name}: two checks named {twice[0]!r}: give one a 'name'"
                )
        for section in ("models", "keys", "teams"):
            for who, policy in getattr(self, section).items():
                if policy not in self.policies:
                    raise ValueError(f"{section}: {who!r} names no policy {policy!r}")
        if self.default is not None and self.default not in self.policies:
            raise ValueError(f"default: no policy {self.default!r}")
        return self

    @property
    def any(self) -> bool:
        return bool(self.policies) and bool(
            self.models or self.keys or self.teams or self.default is not None
        )

    def policy_name(
        self, *, key: str | None, team: str | None, model: str, deployment: str | None = None
    ) -> str | None:
        """The policy of a call: its key's, team's, model's, else the default's."""
        if key is not None and key in self.keys:
            return self.keys[key]
        if team is not None and team in self.teams:
            return self.teams[team]
        if model in self.models:
            return self.models[model]
        if deployment is not None and deployment in self.models:
            return self.models[deployment]
        return self.default


@dataclass(frozen=True, slots=True)
class Check:
    """One check, built: its detector (or answer check, to bind to a request)."""

    name: str
    detector: Any
    action: Action
    sides: tuple[Side, ...]
    min_score: float = 0.0

    def findings(self, detector: Detector, text: str) -> list[Finding]:
        found = detector.scan(text)
        if self.min_score:
            found = [f for f in found if f.score >= self.min_score]
        return found


_LONGEST_SPAN = 48


def decision(check: Check, finding: Finding, where: Side, text: str) -> dict[str, Any]:
    """What a check decided on one finding, as events carry it (the span masked)."""
    span = finding.redacted(text)
    if len(span) > _LONGEST_SPAN:  # a sentence, a whole answer: its edges and its length
        span = f"{span[:2]}***[{len(span)} characters]***{span[-2:]}"
    out = {
        "check": check.name,
        "detector": finding.detector,
        "label": finding.label,
        "action": check.action,
        "where": where,
        "score": round(finding.score, 4),
        "span": span,
    }
    detail = getattr(finding, "detail", None)
    if detail:
        out["detail"] = detail
    return out


@dataclass(slots=True)
class Run:
    """What running a policy's checks on one text gave."""

    text: str
    """The text to pass on (redacted where a check redacted)."""
    decisions: list[dict[str, Any]] = field(default_factory=list)
    blocked: dict[str, Any] | None = None
    """The decision that blocked (the run stopped there), or None."""
    flagged: bool = False


Observe = Callable[[str, float], None]


class Policy:
    """The checks of one policy, built once (see the module)."""

    def __init__(self, name: str, checks: Iterable[CheckSpec] | PolicySpec) -> None:
        if isinstance(checks, PolicySpec):
            checks = checks.checks()
        self.name = name
        self.checks = [
            Check(c.check_name, build(c), c.action, c.sides, c.min_score) for c in checks
        ]
        self.input = [c for c in self.checks if "input" in c.sides]
        self.output = [c for c in self.checks if "output" in c.sides]

    def bound(self, body: dict[str, Any]) -> list[tuple[Check, Detector]]:
        """The output checks with their detectors for this request: an answer check bound to
        it (left out when the request gives it nothing to check)."""
        out: list[tuple[Check, Detector]] = []
        for check in self.output:
            bind = getattr(check.detector, "bind", None)
            detector = check.detector if bind is None else bind(body)
            if detector is not None:
                out.append((check, detector))
        return out

    def run(
        self,
        text: str,
        where: Side,
        vault: Vault | None = None,
        *,
        checks: list[tuple[Check, Detector]] | None = None,
        observe: Observe | None = None,
    ) -> Run:
        """Run the checks of ``where`` (or the ``checks`` given, bound) on ``text``."""
        if checks is None:
            checks = [(c, c.detector) for c in (self.input if where == "input" else self.output)]
        run = Run(text)
        for check, detector in checks:
            started = time.perf_counter()
            findings = check.findings(detector, run.text)
            if observe is not None:
                observe(check.name, time.perf_counter() - started)
            if not findings:
                continue
            run.decisions.extend(decision(check, f, where, run.text) for f in findings)
            if check.action == "block":
                run.blocked = run.decisions[-len(findings)]
                return run
            if check.action == "flag":
                run.flagged = True
            elif check.action == "redact":
                run.text = redacted(run.text, findings, vault if where == "input" else None)
        return run


def redacted(text: str, findings: list[Finding], vault: Vault | None) -> str:
    """The text with each finding replaced: by its pseudonym in ``vault``
    (:func:`conveyor.guardrails.pii.redact`), else by ``[REDACTED:LABEL]`` (overlapping
    findings: the first one)."""
    if vault is not None:
        return redact(text, findings, vault)[0]
    kept: list[Finding] = []
    for finding in sorted(findings, key=lambda f: (f.start, -f.end)):
        if not kept or finding.start >= kept[-1].end:
            kept.append(finding)
    for finding in reversed(kept):
        text = text[: finding.start] + f"[REDACTED:{finding.label}]" + text[finding.end :]
    return text
