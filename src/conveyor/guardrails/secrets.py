"""Secrets in text: API keys by their vendors' published shapes, private keys, tokens.

Labels: ``API_KEY`` (OpenAI ``sk-``, Anthropic ``sk-ant-``, AWS ``AKIA``/``ASIA``, GitHub
``ghp_``/``gho_``/``ghs_``/``github_pat_``, Slack ``xox[abpr]-``, Google ``AIza``, Stripe
``sk_live_``/``rk_live_``, Conveyor ``cvy_``), ``PRIVATE_KEY`` (a PEM block), ``JWT``
(three base64url parts, the first a JSON header), ``SECRET`` (a long random-looking value
assigned to a name such as ``password``, ``secret``, ``token`` or ``api_key``).
"""

from __future__ import annotations

import base64
import math
import re
from collections import Counter

from conveyor.guardrails.pii import _without_overlaps
from conveyor.guardrails.types import Finding

__all__ = ["SecretsDetector"]

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
    r"(?i)\b(?:password|passwd|secret|token|api[_-]?key|access[_-]?key)\b\s*[:=]\s*"
    r"['\"]?([A-Za-z0-9/+_.=-]{16,})"
)


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _jwt(value: str) -> bool:
    head = value.split(".", 1)[0]
    try:
        return base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)).startswith(b"{")
    except ValueError:
        return False


class SecretsDetector:
    """Finds API keys, private keys, JWTs and assigned secrets (see the module)."""

    name = "secrets"

    def scan(self, text: str) -> list[Finding]:
        found = []
        for label, pattern in _PATTERNS.items():
            for match in pattern.finditer(text):
                if label == "JWT" and not _jwt(match.group()):
                    continue
                found.append(Finding(self.name, label, match.start(), match.end()))
        for match in _ASSIGNED.finditer(text):
            value = match.group(1)
            if _entropy(value) >= 3.5:  # random-looking, not "correcthorsebattery"
                found.append(Finding(self.name, "SECRET", match.start(1), match.end(1), 0.9))
        return _without_overlaps(found)
