"""A part of an app built at most once: with the app when its spec needs it, else on first use.

A capability whose spec section is empty (a server of models only, with no RAG
collection or LLM deployment) still contributes its routes, so that a call gets
its usual answer; what answers them is built by the first such call, which
keeps its modules and set-up out of the server's start-up. ``get()`` is safe
from any thread (a handler run with ``asyncio.to_thread`` included).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Lazy"]

T = TypeVar("T")


class Lazy(Generic[T]):
    """``build()`` called once, by the first :meth:`get`."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> T | None:
        """The value when it has been built, else None (nothing is built by asking)."""
        return self._value

    def get(self) -> T:
        found = self._value
        if found is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
                found = self._value
        return found
