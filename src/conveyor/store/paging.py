"""Keyset pagination shared by every listing (runs, reports, events...).

A cursor is an opaque, URL-safe string encoding the sort key of the last item
returned; the next page starts strictly after it. Unlike OFFSET, a page costs
the same at item 100,000 as at item 0, and rows inserted meanwhile neither
repeat nor shift items out of view.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from conveyor.errors import InvalidInputError

__all__ = ["MAX_PAGE_SIZE", "Page", "check_limit", "decode_cursor", "encode_cursor"]

T = TypeVar("T")
MAX_PAGE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of results; ``next_cursor`` is None on the last page."""

    items: Sequence[T]
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def encode_cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    """The key encoded in ``cursor``; InvalidInputError for a malformed one."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"malformed page cursor {cursor!r}", field="cursor") from exc
    if not isinstance(key, list) or len(key) != arity:
        raise InvalidInputError(f"page cursor {cursor!r} is not for this listing", field="cursor")
    return key


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInputError(
            f"limit must be an integer from 1 to {MAX_PAGE_SIZE}, got {limit!r}", field="limit"
        )
    return limit
