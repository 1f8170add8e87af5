"""Secrets in text: API keys by their vendors' published shapes, private keys, tokens.

Labels: ``API_KEY`` (OpenAI ``sk-``, Anthropic ``sk-ant-``, AWS ``AKIA``/``ASIA``, GitHub
``ghp_``/``gho_``/``ghs_``/``github_pat_``, Slack ``xox[abpr]-``, Google ``AIza``, Stripe
``sk_live_``/``rk_live_``, Conveyor ``cvy_``), ``PRIVATE_KEY`` (a PEM block), ``JWT``
(three base64url parts, the first a JSON header), ``SECRET`` (a random-looking value of
16 characters or more, letters and digits mixed, at least 3.5 bits of entropy a
character, right after a name such as ``password``, ``secret``, ``token``, ``api_key`` or
``Bearer``: ``token: ...``, ``"api_key": "..."``, ``my password is ...``).
"""

from __future__ import annotations

import base64
import math
import re
from collections import Counter

from conveyor.guardrails.pii import _without_overlaps
from conveyor.guardrails.types import Finding

__all__ = ["LABELS", "SecretsDetector"]

_PATTERNS: dict[str, re.Pattern[str]] = {
    "API_KEY": re.compile(
        r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}|(?:AKIA|ASIA)[A-Z0-9]{16}"
        r"|gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,}|xox[abpr]-[A-Za-z0-9-]{10,}"
        r"|AIza[0-9A-Za-z_-]{35}|(?:sk|rk)_live_[A-Za-z0-9]{20,}|cvy_[A-Za-z0-9_-]{20,})"
    ),
    "PRIVATE_KEY": re.compile(
        r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]*?"
        r"(?:-----END (?:[A-Z]+ )?PRIVATE KEY-----|$)"
    ),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
}
_ASSIGNED = re.compile(
    r"(?i)\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|auth[_-]?key"
    r"|client[_-]?secret|bearer|credentials?)s?\b[\"']?\s*(?:[:=]|=>|->|\bis\b|\bwas\b)?\s*"
    r"[\"']?([A-Za-z0-9/+_.=-]{16,})"
)
#: The labels, in the order they are looked for.
LABELS = ("API_KEY", "PRIVATE_KEY", "JWT", "SECRET")


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _jwt(value: str) -> bool:
    head = value.split(".", 1)[0]
    try:
        return base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)).startswith(b"{")
    except ValueError:
        return False


def _random_looking(value: str) -> bool:
    """Letters and digits mixed, and at least 3.5 bits of entropy a character: a token,
    not ``correcthorsebattery`` or ``/usr/local/bin/python3``."""
    has_digit = any(c.isdigit() for c in value)
    has_letter = any(c.isalpha() for c in value)
    return has_digit and has_letter and value.count("/") < 3 and _entropy(value) >= 3.5


class SecretsDetector:
    """Finds API keys, private keys, JWTs and assigned secrets (see the module); ``labels``
    narrows to some of :data:`LABELS`."""

    name = "secrets"

    def __init__(self, labels: list[str] | None = None) -> None:
        chosen = tuple(labels) if labels else LABELS
        unknown = [label for label in chosen if label not in LABELS]
        if unknown:
            raise ValueError(f"unknown secret labels {unknown}: known {', '.join(LABELS)}")
        self.labels = chosen

    def scan(self, text: str) -> list[Finding]:
        found = []
        for label, pattern in _PATTERNS.items():
            if label not in self.labels:
                continue
            for match in pattern.finditer(text):
                if label == "JWT" and not _jwt(match.group()):
                    continue
                found.append(Finding(self.name, label, match.start(), match.end()))
        if "SECRET" in self.labels:
            for match in _ASSIGNED.finditer(text):
                if _random_looking(match.group(1)):
                    found.append(Finding(self.name, "SECRET", match.start(1), match.end(1), 0.9))
        return _without_overlaps(found)
