"""Personal data in text, found by pattern and confirmed by the number's own checksum where
it has one, so a random 16-digit number is not a card and a mistyped IBAN is not an IBAN.

Labels: ``CREDIT_CARD`` (13 to 19 digits, spaces or dashes allowed, Luhn), ``IBAN``
(country code, check digits, the country's length, ISO 7064 mod 97), ``EMAIL``,
``PHONE`` (E.164 ``+CC ...``, and North American ``(555) 123-4567`` forms), ``US_SSN``
(area not 000, 666 or 9xx; group and serial not zero), ``UK_NINO`` (prefix and suffix
letters as HMRC allocates them), ``FR_NIR`` (sex, year, month, department, 97 - n mod 97
key), ``IP_ADDRESS`` (IPv4, each part 0 to 255).

One compiled pattern per label; each match is validated before it is reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from conveyor.guardrails.types import Finding

__all__ = ["LABELS", "PiiDetector", "iban_valid", "luhn_valid"]


def luhn_valid(digits: str) -> bool:
    """The Luhn check of a string of digits."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


#: IBAN lengths by country (ISO 13616; the countries of SEPA and a few more).
_IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GI": 23, "GR": 27,
    "HR": 21, "HU": 28, "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26, "AE": 23, "SA": 24, "IL": 23,
}  # fmt: skip


def iban_valid(text: str) -> bool:
    """An IBAN's length for its country and its mod-97 check (spaces ignored)."""
    iban = text.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    moved = iban[4:] + iban[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def _card(match: str) -> bool:
    digits = re.sub(r"[ -]", "", match)
    return 13 <= len(digits) <= 19 and luhn_valid(digits) and len(set(digits)) > 1


def _ssn(match: str) -> bool:
    area, group, serial = match[0:3], match[4:6], match[7:11]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _nir(match: str) -> bool:
    digits = re.sub(r"\s", "", match)
    body, key = digits[:13], digits[13:]
    if not body.isdigit():  # Corsica's 2A / 2B
        body = body.replace("2A", "19").replace("2B", "18")
        if not body.isdigit():
            return False
    return 97 - int(body) % 97 == int(key)


def _ipv4(match: str) -> bool:
    return all(
        0 <= int(part) <= 255 and (part == "0" or part[0] != "0") for part in match.split(".")
    )


def _always(match: str) -> bool:
    return True


_B = r"(?<![\w.+-])"  # not inside a longer token
_E = r"(?![\w])"

#: Label -> (pattern, validator).
LABELS: dict[str, tuple[re.Pattern[str], Callable[[str], bool]]] = {
    # not a run of digit groups' middle or start (an IBAN's, an order number's)
    "CREDIT_CARD": (
        re.compile(_B + r"(?<!\d[ -])\d(?:[ -]?\d){12,18}" + _E + r"(?![ -]\d)"),
        _card,
    ),
    "IBAN": (
        re.compile(r"(?<![A-Z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Z0-9])", re.I),
        iban_valid,
    ),
    "EMAIL": (
        re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        _always,
    ),
    "PHONE": (
        re.compile(
            r"(?<![\w+])(?:\+[1-9]\d{0,2}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}"
            r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?![\w])"
        ),
        lambda m: 8 <= sum(c.isdigit() for c in m) <= 15,
    ),
    "US_SSN": (re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), _ssn),
    "UK_NINO": (
        re.compile(
            r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
            r" ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
        ),
        _always,
    ),
    "FR_NIR": (
        re.compile(
            r"\b[12] ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}\b"
        ),
        _nir,
    ),
    "IP_ADDRESS": (re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"), _ipv4),
}


#: Label -> a character its match must contain: a label whose character is absent is not
#: run (a substring search is far cheaper than the pattern).
_ANCHORS = {"EMAIL": "@", "IP_ADDRESS": ".", "US_SSN": "-"}


class PiiDetector:
    """Finds the configured labels (default: all of :data:`LABELS`)."""

    name = "pii"

    def __init__(self, entities: Iterable[str] | None = None) -> None:
        chosen = list(entities) if entities else list(LABELS)
        unknown = [e for e in chosen if e not in LABELS]
        if unknown:
            raise ValueError(f"unknown PII entities {unknown}: known {', '.join(LABELS)}")
        self.entities = chosen

    def scan(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        for label in self.entities:
            anchor = _ANCHORS.get(label)
            if anchor is not None and anchor not in text:
                continue
            pattern, valid = LABELS[label]
            for match in pattern.finditer(text):
                if valid(match.group()):
                    found.append(Finding(self.name, label, match.start(), match.end()))
        return _without_overlaps(found)


def _without_overlaps(found: list[Finding]) -> list[Finding]:
    """The findings in order, a span inside an earlier or longer one dropped (a card's
    digits are not also a phone number)."""
    found.sort(key=lambda f: (f.start, -(f.end - f.start)))
    kept: list[Finding] = []
    for finding in found:
        if kept and finding.start < kept[-1].end:
            continue
        kept.append(finding)
    return kept
