"""Personal data in text, found by pattern and confirmed by the number's own checksum where
it has one, so a random 16-digit number is not a card and a mistyped IBAN is not an IBAN.

Labels: ``CREDIT_CARD`` (13 to 19 digits, spaces or dashes allowed, Luhn), ``IBAN``
(an upper-case country code, check digits, the country's length, ISO 7064 mod 97), ``EMAIL``,
``PHONE`` (E.164 ``+CC ...``; North American ``(555) 123-4567`` and ``555-123-4567``;
French ``01 42 68 53 00``; British ``020 7946 0958`` and ``07700 900123``: national forms
only with their separators, so a bare run of ten digits is not a phone), ``US_SSN`` (area
not 000, 666 or 9xx; group and serial not zero), ``UK_NINO`` (prefix and suffix letters as
HMRC allocates them), ``FR_NIR`` (sex, year, month, department, 97 - n mod 97 key),
``ES_DNI`` (8 digits and the letter of n mod 23; NIE ``X``/``Y``/``Z`` + 7 digits too),
``NL_BSN`` (9 digits passing the 11-test, and only after the word BSN,
burgerservicenummer or sofinummer: one 9-digit number in 11 passes the test by chance),
``IP_ADDRESS`` (IPv4, each part 0 to 255; IPv6 as :mod:`ipaddress` parses it).

One compiled pattern per label; each match is validated before it is reported. A label
whose pattern needs a character the text lacks (``@`` for an email) is not run.

Pseudonyms (:class:`Vault`, :func:`redact`, :func:`restore`, :class:`StreamRestorer`):
each finding becomes ``<LABEL_N>``, the same value always the same placeholder within a
vault (one per conversation), and an answer's placeholders are put back, a streamed one's
too however the stream was cut.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping

from conveyor.guardrails.types import Finding

__all__ = [
    "LABELS",
    "PiiDetector",
    "StreamRestorer",
    "Vault",
    "bsn_valid",
    "dni_valid",
    "iban_valid",
    "luhn_valid",
    "redact",
    "restore",
]


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


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def dni_valid(text: str) -> bool:
    """A Spanish DNI's (or NIE's) control letter: the number mod 23."""
    value = re.sub(r"[\s.-]", "", text).upper()
    if value[:1] in ("X", "Y", "Z"):
        value = str("XYZ".index(value[0])) + value[1:]
    body, letter = value[:-1], value[-1:]
    return body.isdigit() and len(body) == 8 and _DNI_LETTERS[int(body) % 23] == letter


def bsn_valid(text: str) -> bool:
    """A Dutch BSN's 11-test: 9*d1 + 8*d2 + ... + 2*d8 - d9 is a multiple of 11."""
    digits = re.sub(r"\D", "", text)
    if len(digits) != 9 or digits == "000000000":
        return False
    total = sum((9 - i) * int(d) for i, d in enumerate(digits[:8])) - int(digits[8])
    return total % 11 == 0


def _ipv6(match: str) -> bool:
    if not any(c.isdigit() for c in match):  # "a::b", "dead::beef" in prose
        return False
    try:
        ipaddress.IPv6Address(match)
    except ValueError:
        return False
    return True


def _phone(match: str) -> bool:
    return 8 <= sum(c.isdigit() for c in match) <= 15


def _ipv4(match: str) -> bool:
    return all(
        0 <= int(part) <= 255 and (part == "0" or part[0] != "0") for part in match.split(".")
    )


def _always(match: str) -> bool:
    return True


def _nino(match: str) -> bool:
    return match[:2] not in ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ")


# Every pattern begins with a character class (a lookbehind, if any, comes after the first
# character: ``X(?<!\w.)`` is ``(?<!\w)X``), so the engine skips ahead to where that class
# matches instead of trying the pattern at every position: 2 to 5 times faster. Digits are
# ``[0-9]``: ``\d`` takes Arabic-Indic digits too, which no checksum here reads.
# a phone is not the start or the end of a longer run of digit groups (a card or an IBAN
# that failed its checksum is not a phone number either)
_NOT_IN_PHONE = r"(?![\w]|[.-][0-9]| [0-9])"

#: (label, pattern, validator, anchors): a label's patterns; ``anchors``: strings one of
#: which its match must contain, in the lower-cased text (a substring search is far
#: cheaper than a pattern, so a rule whose anchors are all absent is not run).
_RULES: list[tuple[str, re.Pattern[str], Callable[[str], bool], tuple[str, ...]]] = [
    # not a run of digit groups' middle or start (an IBAN's, an order number's)
    (
        "CREDIT_CARD",
        re.compile(r"[0-9](?<![\w.+-].)(?<![0-9][ -].)(?:[ -]?[0-9]){12,18}(?!\w)(?![ -][0-9])"),
        _card,
        (),
    ),
    (
        "IBAN",
        re.compile(r"[A-Z](?<![A-Za-z0-9].)[A-Z][0-9]{2}(?: ?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])"),
        iban_valid,
        (),
    ),
    (
        "EMAIL",
        re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        _always,
        ("@",),
    ),
    (  # E.164: +33 1 42 68 53 00
        "PHONE",
        re.compile(
            r"\+(?<![\w+.-].)(?<![0-9] .)[1-9][0-9]{0,2}[ .-]?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}"
            r"(?:[ .-]?[0-9]{2,4}){2,4}" + _NOT_IN_PHONE
        ),
        _phone,
        ("+",),
    ),
    (  # North America: (555) 123-4567
        "PHONE",
        re.compile(
            r"\((?<![\w+.-].)(?<![0-9] .)[0-9]{3}\)[ .-]?[0-9]{3}[ .-][0-9]{4}" + _NOT_IN_PHONE
        ),
        _phone,
        ("(",),
    ),
    (  # 555-123-4567; France: 01 42 68 53 00; Britain: 020 7946 0958, 07700 900123
        "PHONE",
        re.compile(
            r"[0-9](?<![\w+.-].)(?<![0-9] .)(?:[0-9]{2}[.-][0-9]{3}[.-][0-9]{4}"
            r"|(?<=0)[1-9]([ .])[0-9]{2}(?:\1[0-9]{2}){3}"
            r"|(?<=0)[1-9][0-9]{1,3} [0-9]{3,4} ?[0-9]{3,4})" + _NOT_IN_PHONE
        ),
        _phone,
        (),
    ),
    (
        "US_SSN",
        re.compile(r"[0-9](?<![0-9-].)[0-9]{2}-[0-9]{2}-[0-9]{4}(?![0-9-])"),
        _ssn,
        ("-",),
    ),
    (
        "UK_NINO",
        re.compile(
            r"[A-CEGHJ-PR-TW-Z](?<!\w.)[A-CEGHJ-NPR-TW-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]\b"
        ),
        _nino,
        (),
    ),
    (
        "FR_NIR",
        re.compile(
            r"[12](?<!\w.) ?[0-9]{2} ?(?:0[1-9]|1[0-2]|[2-9][0-9]) ?(?:[0-9]{2}|2[AB]) ?"
            r"[0-9]{3} ?[0-9]{3} ?[0-9]{2}\b"
        ),
        _nir,
        (),
    ),
    (
        "ES_DNI",
        re.compile(r"[0-9XYZxyz](?<![\w-].)[0-9]{7}-?[A-HJ-NP-TV-Za-hj-np-tv-z](?![\w-])"),
        dni_valid,
        (),
    ),
    (
        "NL_BSN",
        re.compile(
            r"(?i:\b(?:bsn|burgerservicenummer|sofinummer)\b)[^\w\n]{0,4}(?:\w+[^\w\n]{1,3}){0,3}?"
            r"(?P<v>[0-9]{4}\.?[0-9]{2}\.?[0-9]{3})(?![0-9]|\.[0-9])"
        ),
        bsn_valid,
        ("bsn", "burgerservicenummer", "sofinummer"),
    ),
    (
        "IP_ADDRESS",
        re.compile(
            r"[0-9](?<![0-9].)(?<![0-9]\..)[0-9]{0,2}\.(?:[0-9]{1,3}\.){2}[0-9]{1,3}"
            r"(?![0-9]|\.[0-9])"
        ),
        _ipv4,
        (".",),
    ),
    (
        "IP_ADDRESS",
        re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"),
        _ipv6,
        ("::", ":0", ":1", ":2", ":3", ":4", ":5", ":6", ":7", ":8", ":9"),
    ),
]
#: The labels, in the order they are looked for.
LABELS: tuple[str, ...] = tuple(dict.fromkeys(label for label, *_ in _RULES))


class PiiDetector:
    """Finds the configured labels (default: all of :data:`LABELS`)."""

    name = "pii"

    def __init__(self, entities: Iterable[str] | None = None) -> None:
        chosen = list(entities) if entities else list(LABELS)
        unknown = [e for e in chosen if e not in LABELS]
        if unknown:
            raise ValueError(f"unknown PII entities {unknown}: known {', '.join(LABELS)}")
        self.entities = chosen
        self._rules = [rule for rule in _RULES if rule[0] in chosen]

    def scan(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        lowered = text.lower()
        for label, pattern, valid, anchors in self._rules:
            if anchors and not any(a in lowered for a in anchors):
                continue
            group = "v" if "v" in pattern.groupindex else 0
            for match in pattern.finditer(text):
                value = match.group(group)
                start = match.start(group)
                if valid(value):
                    found.append(Finding(self.name, label, start, start + len(value)))
                elif label == "IBAN":  # "DE89 3704 ... 00 then": the next word taken too
                    while " " in value:
                        value = value.rsplit(" ", 1)[0]
                        if valid(value):
                            found.append(Finding(self.name, label, start, start + len(value)))
                            break
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


#: A placeholder: ``<LABEL_N>``.
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)_(\d+)>")
_LONGEST_PLACEHOLDER = 48


class Vault:
    """The pseudonyms of one conversation: a value <-> ``<LABEL_N>``, the same value the
    same placeholder, numbered per label in order of first sight."""

    def __init__(self, mapping: Mapping[str, str] | None = None) -> None:
        self._by_value: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        for placeholder, value in (mapping or {}).items():
            found = PLACEHOLDER.fullmatch(placeholder)
            if found is None:
                raise ValueError(f"{placeholder!r} is not a placeholder (<LABEL_N>)")
            label, number = found.group(1), int(found.group(2))
            self._by_value[(label, value)] = placeholder
            self._by_placeholder[placeholder] = value
            self._counts[label] = max(self._counts.get(label, 0), number)

    def __bool__(self) -> bool:
        return bool(self._by_placeholder)

    def __len__(self) -> int:
        return len(self._by_placeholder)

    @property
    def mapping(self) -> dict[str, str]:
        """Placeholder -> original value (a copy)."""
        return dict(self._by_placeholder)

    def placeholder(self, label: str, value: str) -> str:
        """The placeholder of ``value`` (a new one the first time it is seen)."""
        found = self._by_value.get((label, value))
        if found is None:
            number = self._counts.get(label, 0) + 1
            self._counts[label] = number
            found = f"<{label}_{number}>"
            self._by_value[(label, value)] = found
            self._by_placeholder[found] = value
        return found

    def restore(self, text: str) -> str:
        """``text`` with every placeholder of this vault put back (others left as they are)."""
        return restore(text, self._by_placeholder)


def redact(text: str, findings: Iterable[Finding], vault: Vault | None = None) -> tuple[str, Vault]:
    """``text`` with each finding replaced by its placeholder in ``vault`` (a new one when
    None; pass the conversation's to keep its numbering), and the vault. Overlapping
    findings: the earlier (then longer) one."""
    vault = Vault() if vault is None else vault
    kept: list[Finding] = []
    for finding in sorted(findings, key=lambda f: (f.start, -f.end)):
        if not kept or finding.start >= kept[-1].end:
            kept.append(finding)
    parts = []
    at = 0
    for finding in kept:
        parts.append(text[at : finding.start])
        parts.append(vault.placeholder(finding.label, text[finding.start : finding.end]))
        at = finding.end
    parts.append(text[at:])
    return "".join(parts), vault


def restore(text: str, vault: Vault | Mapping[str, str]) -> str:
    """``text`` with the placeholders ``vault`` knows put back."""
    mapping = vault.mapping if isinstance(vault, Vault) else vault
    if not mapping or "<" not in text:
        return text
    return PLACEHOLDER.sub(lambda m: mapping.get(m.group(), m.group()), text)


class StreamRestorer:
    """Puts placeholders back in a streamed answer, chunk by chunk: a tail that could still
    become a placeholder (``<CREDIT_CA``) is held until the next chunk shows what it is, so
    the pieces it returns, joined, are ``restore(whole answer)`` wherever the stream was
    cut. Call :meth:`flush` at the end."""

    def __init__(self, vault: Vault | Mapping[str, str]) -> None:
        self._mapping = vault.mapping if isinstance(vault, Vault) else dict(vault)
        self._held = ""

    def feed(self, chunk: str) -> str:
        text = self._held + chunk
        cut = len(text)
        opened = text.rfind("<")
        if opened >= 0 and len(text) - opened <= _LONGEST_PLACEHOLDER:
            tail = text[opened:]
            if _PARTIAL.fullmatch(tail):
                cut = opened
        self._held = text[cut:]
        return restore(text[:cut], self._mapping)

    def flush(self) -> str:
        """What is still held (not a placeholder after all), put back as it came."""
        held, self._held = self._held, ""
        return restore(held, self._mapping)


#: What a placeholder's first characters look like (``<``, ``<IBAN``, ``<IBAN_1``).
_PARTIAL = re.compile(r"<(?:[A-Z][A-Z0-9_]*)?")
