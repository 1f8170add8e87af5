"""The labelled PII set both sides of benchmarks/guardrails.py read: texts with planted
values, valid and not (a card failing Luhn, an IBAN with wrong check digits, an SSN from a
never-issued area, a NINO with a prefix HMRC never allocates, a DNI with the wrong letter,
an IPv4 address with an octet above 255: 40% of those are invalid and must not be
reported), emails and phones (international, North American, French and British national
forms), each planted value's label and span. Deterministic (seeded)."""

from __future__ import annotations

import random
import string
from typing import Any

FILLER = [
    "Hello team, please process the request below.",
    "The customer called about the delayed delivery of order 4471.",
    "Meeting moved to 14:30 on 2026-12-05, room 3.",
    "Version 2.4.1 fixed the bug reported in ticket 88213.",
    "Thanks for your patience, we will get back to you shortly.",
    "Invoice total is 1,250.00 EUR, due in 30 days.",
]


def _luhn_digit(body: str) -> str:
    total = 0
    for i, char in enumerate(reversed(body)):
        d = int(char)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def card(rng: random.Random, valid: bool) -> str:
    body = rng.choice(["4", "51", "52", "37"]) + "".join(
        rng.choice(string.digits) for _ in range(13)
    )
    body = body[:15]
    digit = _luhn_digit(body)
    if not valid:
        digit = str((int(digit) + rng.randint(1, 9)) % 10)
    number = body + digit
    return " ".join(number[i : i + 4] for i in range(0, 16, 4))


def iban(rng: random.Random, valid: bool) -> str:
    country, length = rng.choice([("DE", 22), ("FR", 27), ("GB", 22), ("NL", 18), ("ES", 24)])
    if country == "GB" or country == "NL":
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4))
        bban += "".join(rng.choice(string.digits) for _ in range(length - 8))
    else:
        bban = "".join(rng.choice(string.digits) for _ in range(length - 4))
    moved = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
    if not valid:
        check = (check + rng.randint(1, 50)) % 97 + 2
    raw = f"{country}{check:02d}{bban}"
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def ssn(rng: random.Random, valid: bool) -> str:
    area = rng.randint(1, 665) if valid else rng.choice([0, 666, rng.randint(900, 999)])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def email(rng: random.Random) -> str:
    user = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))
    domain = rng.choice(["example.com", "mail.co.uk", "corp.io"])
    return f"{user}.{rng.choice(['lee', 'smith', 'ng'])}@{domain}"


def phone(rng: random.Random) -> str:
    pairs = " ".join(f"{rng.randint(0, 99):02d}" for _ in range(4))
    return rng.choice(
        [
            f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
            f"+1 415 {rng.randint(200, 999)} {rng.randint(1000, 9999)}",
            f"({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
            f"0{rng.randint(1, 9)} {pairs}",  # France
            f"020 {rng.randint(7000, 8999)} {rng.randint(1000, 9999)}",  # London
        ]
    )


_NINO_FIRST = "ABCEGHJKLMNOPRSTWXYZ"
_NINO_SECOND = "ABCEGHJKLMNPRSTWXYZ"


def nino(rng: random.Random, valid: bool) -> str:
    if valid:
        prefix = rng.choice(_NINO_FIRST) + rng.choice(_NINO_SECOND)
        while prefix in ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ"):
            prefix = rng.choice(_NINO_FIRST) + rng.choice(_NINO_SECOND)
    else:  # never allocated: D, F, I, Q, U or V first, or a withheld pair
        prefix = rng.choice(["D", "F", "I", "Q", "U", "V"]) + rng.choice("ABCEH")
        prefix = rng.choice([prefix, "GB", "BG", "NK"])
    digits = " ".join(f"{rng.randint(0, 99):02d}" for _ in range(3))
    return f"{prefix} {digits} {rng.choice('ABCD')}"


def dni(rng: random.Random, valid: bool) -> str:
    number = rng.randint(10_000_000, 99_999_999)
    letter = "TRWAGMYFPDXBNJZSQVHLCKE"[number % 23]
    if not valid:
        letter = rng.choice([c for c in "TRWAGMYFPDXBNJZSQVHLCKE" if c != letter])
    return f"{number}{letter}"


def ip(rng: random.Random, valid: bool) -> str:
    parts = [rng.randint(1, 254) for _ in range(4)]
    if not valid:
        parts[rng.randrange(4)] = rng.randint(256, 999)
    return ".".join(map(str, parts))


#: The labels planted.
LABELS = ("CREDIT_CARD", "IBAN", "US_SSN", "EMAIL", "PHONE", "UK_NINO", "ES_DNI", "IP_ADDRESS")


def long_texts(n: int = 40, words: int = 750) -> list[str]:
    """``n`` texts of about 1,000 tokens (``words`` words, ~1.3 tokens a word), each the
    labelled texts of a shuffled set joined: what latency is measured on."""
    items = dataset(n * 20, seed=11)
    out = []
    at = 0
    for _ in range(n):
        parts: list[str] = []
        while sum(len(p.split()) for p in parts) < words:
            parts.append(items[at % len(items)]["text"])
            at += 1
        out.append(" ".join(parts))
    return out


def dataset(n: int = 400, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` texts: ``{"text", "spans": [[start, end, label], ...]}`` (true PII only)."""
    rng = random.Random(seed)
    items = []
    makers = [
        ("CREDIT_CARD", lambda: card(rng, True), lambda: card(rng, False)),
        ("IBAN", lambda: iban(rng, True), lambda: iban(rng, False)),
        ("US_SSN", lambda: ssn(rng, True), lambda: ssn(rng, False)),
        ("EMAIL", lambda: email(rng), None),
        ("PHONE", lambda: phone(rng), None),
        ("UK_NINO", lambda: nino(rng, True), lambda: nino(rng, False)),
        ("ES_DNI", lambda: dni(rng, True), lambda: dni(rng, False)),
        ("IP_ADDRESS", lambda: ip(rng, True), lambda: ip(rng, False)),
    ]
    for _ in range(n):
        parts: list[str] = [rng.choice(FILLER)]
        spans = []
        for _ in range(rng.randint(1, 3)):
            label, good, bad = rng.choice(makers)
            planted_valid = bad is None or rng.random() < 0.6
            value = good() if planted_valid else bad()  # type: ignore[misc]
            prefix = (
                " ".join(parts) + " " + rng.choice(["Ref:", "Use", "Details:", "Send to"]) + " "
            )
            start = len(prefix)
            parts = [prefix + value + "."]
            if planted_valid:
                spans.append([start, start + len(value), label])
            parts.append(rng.choice(FILLER))
        items.append({"text": " ".join(parts), "spans": spans})
    return items
