"""A readable stream that checks an artifact's hash as the bytes go by.

Loading a model of several GB through :meth:`ArtifactStore.get` would hold it
all in memory; this stream hashes each chunk as the caller reads it and
compares at the end, so a tampered artifact is still refused at constant
memory. The price is that the verdict arrives only once the last byte has
been read: a caller that stops early has read unverified bytes.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from conveyor.artifacts.digest import integrity_error

__all__ = ["VerifyingReader"]


class VerifyingReader(io.RawIOBase):
    """Read-only, forward-only stream over one artifact.

    Raises :class:`~conveyor.errors.ArtifactIntegrityError` from the read that
    reaches the end (the one that completes the expected size, or the one
    that returns ``b""``) if the bytes read do not hash to the digest.
    **Read to the end** (``read()`` with no argument, or until ``b""``)
    before trusting what was read; closing early skips the check.
    """

    def __init__(
        self,
        raw: Any,
        *,
        digest: str,
        expected_hex: str,
        size: int,
        where: str,
        guard: Callable[[], AbstractContextManager[None]],
    ) -> None:
        super().__init__()
        self._raw = raw
        self._digest = digest
        self._expected = expected_hex
        self._size = size
        self._where = where
        self._guard = guard
        self._hasher = hashlib.sha256()
        self._read = 0
        self._verified = False

    @property
    def digest(self) -> str:
        return self._digest

    @property
    def verified(self) -> bool:
        """True once every byte was read and matched the digest."""
        return self._verified

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        # Seeking would let bytes go unhashed; a verified read is front to back.
        return False

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed artifact stream")
        view = memoryview(buffer).cast("B")
        with self._guard():
            chunk: bytes = self._raw.read(len(view))
        n = len(chunk)
        if n:
            view[:n] = chunk
            self._hasher.update(chunk)
            self._read += n
        # Check as soon as the expected size is complete, so a caller that reads
        # exactly `size` bytes (and never sees b"") still gets the verdict.
        if (n == 0 or self._read >= self._size) and not self._verified:
            self._finish()
        elif n and self._verified:
            # Bytes past the verified end: the object grew after it was opened.
            self._verified = False
            self._finish()
        return n

    def _finish(self) -> None:
        actual = self._hasher.copy().hexdigest()
        if actual != self._expected:
            raise integrity_error(self._digest, actual, self._where)
        self._verified = True

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()
