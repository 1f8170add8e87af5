"""The metadata store contract, on each store of the backend matrix (SQLite, PostgreSQL)."""

from __future__ import annotations

from conveyor.testing.store import MetadataStoreContract


class TestMetadataStore(MetadataStoreContract):
    """The contract, once per backend of the matrix's ``store_url``."""
