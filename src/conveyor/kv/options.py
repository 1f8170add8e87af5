"""Argument checks and URL options shared by every key-value backend.

Each backend validates the same way so that a bad call fails with the same
:class:`InvalidInputError` whichever URL is configured: a program tested on
``memory://`` must not meet a new error class on ``redis://``.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import NamedTuple

from conveyor.backends import BackendURL, check_options
from conveyor.errors import InvalidInputError

__all__ = [
    "DEFAULT_PREFIX",
    "Score",
    "Versioned",
    "check_amount",
    "check_key",
    "check_query",
    "check_ttl",
    "check_value",
    "check_versioned",
    "counter_value",
    "prefix_of",
    "ttl_ms",
]

#: Namespace of every key unless the URL says ``?prefix=...``.
DEFAULT_PREFIX = "conveyor:"

#: An ordering score: compared as a pair, the first number, then the second (a tie-break).
Score = tuple[float, float]


class Versioned(NamedTuple):
    """One value for :meth:`~conveyor.kv.KeyValueStore.set_many_if_newer`.

    ``score`` orders the writes of one key (the online feature store passes
    ``(event time, created time)`` in microseconds): the value is written unless
    the key holds a value with a higher score. ``ttl`` is this key's own expiry
    in seconds (``None``: never), so one batch can give every key its own lifetime.
    Scores are compared as doubles: integers up to 2**53 are exact.
    """

    value: bytes
    score: Score
    ttl: float | None = None


def prefix_of(url: BackendURL) -> str:
    """The key prefix from ``?prefix=``; an empty one is refused.

    An empty prefix would let :meth:`clear` wipe keys that belong to another
    application sharing the same Redis database.
    """
    prefix = url.query.get("prefix", DEFAULT_PREFIX)
    if not prefix:
        raise InvalidInputError(
            f"{url}: prefix must not be empty; every key-value store is namespaced "
            f"(the default is {DEFAULT_PREFIX!r})",
            field="prefix",
        )
    return prefix


def check_query(url: BackendURL, allowed: Collection[str]) -> None:
    """Refuse options no key-value backend of this kind knows (``prefix`` always is)."""
    check_options(url, {*allowed, "prefix"}, "key-value")


def check_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidInputError(
            f"key-value keys are str, got {type(key).__name__} ({key!r})", field="key"
        )
    return key


def check_value(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise InvalidInputError(
        f"key-value values are bytes, got {type(value).__name__}; encode it first "
        "(for example orjson.dumps(obj) or text.encode())",
        field="value",
    )


def check_ttl(ttl: object) -> float | None:
    """``None`` (no expiry) or a finite number of seconds greater than zero."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidInputError(
            f"ttl is a number of seconds, got {type(ttl).__name__}", field="ttl"
        )
    if not (math.isfinite(ttl) and ttl > 0):
        raise InvalidInputError(
            f"ttl must be a positive number of seconds (or None for no expiry), got {ttl!r}",
            field="ttl",
        )
    return float(ttl)


def check_versioned(key: str, item: object) -> tuple[bytes, Score, float | None]:
    """A :class:`Versioned` (or a plain 2- or 3-tuple) checked: bytes, two finite numbers, ttl."""
    if type(item) is Versioned:
        # What the online store sends, a million times a materialization: checked by
        # exact types first (the general checks below cost several times as much).
        value, score, ttl = item
        if type(value) is bytes and type(score) is tuple and len(score) == 2:
            first, second = score
            if (
                type(first) is float
                and type(second) is float
                and math.isfinite(first)
                and math.isfinite(second)
                and (ttl is None or (type(ttl) is float and math.isfinite(ttl) and ttl > 0))
            ):
                return value, score, ttl
    if not isinstance(item, tuple) or len(item) not in (2, 3):
        raise InvalidInputError(
            f"set_many_if_newer takes Versioned(value, score, ttl) per key; {key!r} has "
            f"{type(item).__name__}",
            field="value",
        )
    value = check_value(item[0])
    score = item[1]
    if (
        not isinstance(score, tuple)
        or len(score) != 2
        or not all(
            isinstance(n, int | float) and not isinstance(n, bool) and math.isfinite(n)
            for n in score
        )
    ):
        raise InvalidInputError(
            f"the score of {key!r} is a pair of finite numbers, got {score!r}", field="score"
        )
    ttl = check_ttl(item[2] if len(item) == 3 else None)
    return value, (float(score[0]), float(score[1])), ttl


def ttl_ms(ttl: float) -> int:
    """Whole milliseconds for Redis ``PX``, never 0 (which Redis rejects)."""
    return max(1, math.ceil(ttl * 1000))


def check_amount(amount: object) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidInputError(
            f"incr amount is an int, got {type(amount).__name__}", field="amount"
        )
    return amount


def counter_value(key: str, raw: bytes) -> int:
    """The integer a counter holds; counters are stored as ASCII decimal, as in Redis."""
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidInputError(
            f"cannot incr {key!r}: its value is not an integer counter", field="key"
        ) from None
