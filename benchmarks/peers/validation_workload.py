"""The validation workload: the table's columns and the 50 expectations, shared by every side.

Standard library only: each tool's side imports it from its own virtualenv
and translates the same expectations (Conveyor's declarative form, plain
dicts) into its own API, so every tool checks exactly the same things.

The data (written by ``benchmarks/validation.py``, seeded) has 20 columns of
mixed types with some nulls, and planted violations: :data:`FAILING` lists
the expectations that must fail; every tool has to find exactly those.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

FULL_ROWS = 10_000_000
QUICK_ROWS = 200_000
SEED = 20_240_601
#: What freshness is measured against; the data's newest timestamp is just before it.
NOW = datetime(2025, 1, 1, tzinfo=UTC)
TIMESTAMP = "timestamp[us, tz=UTC]"

#: name -> Arrow type, in file order.
COLUMNS: dict[str, str] = {
    "id": "int64",
    "customer_id": "int64",
    "amount": "double",
    "quantity": "int32",
    "unit_price": "double",
    "discount": "double",
    "tax_rate": "double",
    "merchant_category": "string",
    "country": "string",
    "currency": "string",
    "channel": "string",
    "status": "string",
    "email": "string",
    "zip": "string",
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
    "age": "int32",
    "score": "double",
    "is_fraud": "bool",
    "device": "string",
}

CATEGORIES = ["grocery", "fuel", "travel", "dining", "retail", "health", "utilities", "online"]
COUNTRIES = ["CH", "DE", "FR", "IT", "AT", "ES", "PT", "NL", "BE", "LU",
             "GB", "IE", "SE", "NO", "DK", "FI", "PL", "CZ", "US", "CA"]  # fmt: skip
CURRENCIES = ["CHF", "EUR", "USD", "GBP", "JPY"]
CHANNELS = ["web", "app", "pos", "phone"]
STATUSES = ["approved", "declined", "pending", "refunded", "chargeback"]
DEVICES = ["ios", "android", "web", "other"]
TAX_RATES = [0.0, 0.077, 0.19, 0.2]

_NOT_NULL = [
    "id", "customer_id", "amount", "quantity", "unit_price", "merchant_category", "country",
    "currency", "channel", "status", "email", "created_at", "is_fraud", "zip", "age", "score",
    "updated_at", "tax_rate", "discount", "device",
]  # fmt: skip

EXPECTATIONS: list[dict[str, Any]] = [
    {
        "kind": "schema",
        "columns": [{"name": k, "type": v} for k, v in COLUMNS.items()],
        "extra_columns": False,
    },
    {"kind": "row_count", "min": 1, "max": 100_000_000},
    {"kind": "freshness", "column": "created_at", "max_lag": "1h"},
    *({"kind": "not_null", "column": c} for c in _NOT_NULL),
    {"kind": "between", "column": "id", "min": 0, "max": 1_000_000_000_000},
    {"kind": "between", "column": "customer_id", "min": 1, "max": 1_000_000},
    {"kind": "between", "column": "amount", "min": 0, "max": 50_000},
    {"kind": "between", "column": "quantity", "min": 1, "max": 100},
    {"kind": "between", "column": "unit_price", "min": 0, "max": 1_000},
    {
        "kind": "between",
        "column": "unit_price",
        "min": 0,
        "strict_min": True,
        "name": "unit_price.positive",
    },
    {"kind": "between", "column": "discount", "min": 0, "max": 0.5},
    {"kind": "between", "column": "tax_rate", "min": 0, "max": 0.25},
    {"kind": "between", "column": "age", "min": 18, "max": 120},
    {"kind": "between", "column": "score", "min": 0, "max": 1},
    {
        "kind": "between",
        "column": "created_at",
        "min": "2020-01-01T00:00:00+00:00",
        "max": "2025-01-02T00:00:00+00:00",
    },
    {"kind": "between", "column": "updated_at", "min": "2020-01-01T00:00:00+00:00"},
    {"kind": "in_set", "column": "merchant_category", "values": CATEGORIES},
    {"kind": "in_set", "column": "country", "values": COUNTRIES},
    {"kind": "in_set", "column": "currency", "values": CURRENCIES},
    {"kind": "in_set", "column": "channel", "values": CHANNELS},
    {"kind": "in_set", "column": "status", "values": STATUSES},
    {"kind": "in_set", "column": "device", "values": DEVICES},
    {"kind": "in_set", "column": "tax_rate", "values": TAX_RATES},
    {"kind": "in_set", "column": "is_fraud", "values": [True, False]},
    {"kind": "matches_regex", "column": "email", "pattern": r"^[^@\s]+@[^@\s]+\.[a-z]+$"},
    {"kind": "matches_regex", "column": "zip", "pattern": r"^[0-9]{5}$"},
    {"kind": "matches_regex", "column": "currency", "pattern": r"^[A-Z]{3}$"},
    {"kind": "matches_regex", "column": "country", "pattern": r"^[A-Z]{2}$"},
    {"kind": "matches_regex", "column": "status", "pattern": r"^[a-z]+$"},
    {"kind": "matches_regex", "column": "channel", "pattern": r"^[a-z]+$"},
    {"kind": "unique", "column": "id"},
]

#: The expectations the planted violations break.
FAILING = sorted(
    [
        "amount.not_null",
        "discount.not_null",
        "device.not_null",
        "amount.between",
        "quantity.between",
        "age.between",
        "merchant_category.in_set",
        "email.matches_regex",
        "zip.matches_regex",
        "id.unique",
    ]
)


def name_of(expectation: dict[str, Any]) -> str:
    """The expectation's name, derived as Conveyor derives it."""
    if "name" in expectation:
        return str(expectation["name"])
    column = expectation.get("column")
    return f"{column}.{expectation['kind']}" if column else str(expectation["kind"])


def parse_args(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """``<parquet path> [json options]`` from the command line."""
    path = argv[1]
    options = json.loads(argv[2]) if len(argv) > 2 else {}
    return path, options


class Phases:
    """Seconds spent in each named phase of a side, from process start."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - start


def emit(result: dict[str, Any]) -> None:
    """Print the result line the harness reads (the tracking workload's marker)."""
    sys.stdout.write("BENCH-RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


assert len(EXPECTATIONS) == 50, len(EXPECTATIONS)
