"""What every key-value backend shares: the prefix, closing, and ``with``."""

from __future__ import annotations

from conveyor.backends import BackendURL, Closeable
from conveyor.errors import ClosedError

__all__ = ["BaseKV"]


class BaseKV(Closeable):
    """Holds the URL and prefix and refuses use after :meth:`close`."""

    #: True when calls are answered from this process's memory (no I/O): an event loop
    #: may call such a store directly; any other goes through a thread.
    local: bool = False

    def __init__(self, url: BackendURL, prefix: str) -> None:
        self._url = url
        self._prefix = prefix
        self._closed = False

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def url(self) -> BackendURL:
        return self._url

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self!r} is closed; open a new one with from_url()")

    def close(self) -> None:
        self._closed = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self._url)!r}, prefix={self._prefix!r})"
