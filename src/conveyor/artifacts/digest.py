"""Content addresses: ``sha256:<64 hex>`` strings and the reference a put returns.

An artifact's address is the SHA-256 of its bytes, so the address alone is
enough to check that what comes back is what went in. The address is kept
in the OCI form (``algorithm:hex``) so a future algorithm can sit beside
this one without ambiguity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conveyor.errors import ArtifactIntegrityError, InvalidInputError

__all__ = ["ALGORITHM", "ArtifactRef", "format_digest", "integrity_error", "parse_digest"]

ALGORITHM = "sha256"
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """What :meth:`ArtifactStore.put` returns: the address, size and media type.

    The store itself keeps only bytes; ``media_type`` is carried here for the
    caller (the registry records it next to the digest).
    """

    digest: str
    """``sha256:<64 lowercase hex>``."""
    size: int
    """Length in bytes."""
    media_type: str | None = None
    """For example ``application/json``; ``None`` when the caller gave none."""

    @property
    def hex(self) -> str:
        """The 64 hex characters of the digest, without the algorithm."""
        return self.digest.partition(":")[2]


def format_digest(hex_digest: str) -> str:
    """``sha256:<hex>`` from a bare hex digest (as ``hashlib`` gives it)."""
    return f"{ALGORITHM}:{hex_digest}"


def parse_digest(digest: object) -> str:
    """The 64 hex characters of ``digest``, or :class:`InvalidInputError`.

    Only the exact canonical form is accepted (lowercase, with the algorithm)
    so that one artifact has one spelling and lookups never miss on case.
    """
    if isinstance(digest, str):
        algorithm, sep, hex_digest = digest.partition(":")
        if sep and algorithm == ALGORITHM and _HEX.fullmatch(hex_digest):
            return hex_digest
    raise InvalidInputError(
        f"{digest!r} is not an artifact digest: expected 'sha256:' followed by "
        "64 lowercase hex characters, as returned by ArtifactStore.put()",
        field="digest",
    )


def integrity_error(digest: str, actual_hex: str, where: str) -> ArtifactIntegrityError:
    """The error for bytes that no longer hash to their address."""
    return ArtifactIntegrityError(
        f"artifact {digest} was altered or damaged: its stored bytes at {where} hash to "
        f"{format_digest(actual_hex)}, expected {digest}. Do not use it; restore it from "
        "a backup, or delete it and put the original bytes again.",
        digest=digest,
        expected=digest,
        actual=format_digest(actual_hex),
        location=where,
    )
