"""Content-addressed artifact store: models, snapshots and reports, by sha256.

Importing this package loads no filesystem driver; fsspec (and s3fs) are
imported when a store is opened.
"""

from conveyor.artifacts.digest import ArtifactRef, format_digest, parse_digest
from conveyor.artifacts.reader import VerifyingReader
from conveyor.artifacts.store import CHUNK_SIZE, ArtifactStore

__all__ = [
    "CHUNK_SIZE",
    "ArtifactRef",
    "ArtifactStore",
    "VerifyingReader",
    "format_digest",
    "parse_digest",
]
