"""NATS subject patterns: whether two can match the same subject."""

from __future__ import annotations

__all__ = ["overlaps"]


def overlaps(a: str, b: str) -> bool:
    """True when some subject matches both patterns (``*`` one token, ``>`` the rest)."""
    x, y = a.split("."), b.split(".")
    for i in range(max(len(x), len(y))):
        p = x[i] if i < len(x) else None
        q = y[i] if i < len(y) else None
        if p == ">" or q == ">":
            return p is not None and q is not None
        if p is None or q is None:
            return False
        if p != q and p != "*" and q != "*":
            return False
    return True
