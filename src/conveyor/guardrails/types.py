"""The guardrails' contracts: a :class:`Detector` scans a text and reports
:class:`Finding`\\ s; a policy (``conveyor.guardrails.policy``) runs detectors in order
and applies each one's action (block, redact, flag for review, log) to what they found.

Detectors are pure and synchronous (no I/O): they run on the event loop for short texts
and are measured per call (the ``conveyor_guardrail_seconds`` metric). A finding's span
is the matched text's ``[start, end)`` in the scanned string, so a redaction can replace
it and an event can name it without carrying it (``redacted()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

__all__ = ["Action", "Detector", "Finding"]

#: What a policy does when a check finds something.
Action = Literal["block", "redact", "flag", "log"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a detector found in a text."""

    detector: str
    """The detector's name (``pii``, ``secrets``, ``injection``, ``policy:medical``)."""
    label: str
    """What was found: ``CREDIT_CARD``, ``IBAN``, ``EMAIL``, ``PHONE``, ``US_SSN``,
    ``API_KEY``, ``PRIVATE_KEY``, ``INJECTION``, a rule's name..."""
    start: int
    end: int
    score: float = 1.0
    """How sure the detector is, 0 to 1 (a validated checksum: 1)."""

    def redacted(self, text: str) -> str:
        """The matched span with all but its edges masked, for events and logs:
        ``4111********1111`` (a short span is masked whole)."""
        found = text[self.start : self.end]
        if len(found) <= 8:
            return "*" * len(found)
        return found[:2] + "*" * (len(found) - 4) + found[-2:]


@runtime_checkable
class Detector(Protocol):
    """Scans a text (a prompt, an answer, a window of a stream)."""

    name: str

    def scan(self, text: str) -> list[Finding]:
        """What it found, in order of ``start``; an empty list when nothing."""
        ...
