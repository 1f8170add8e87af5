"""The key-value contract on each backend of the matrix's ``kv_url`` (memory, Redis).

SQLite, a key-value backend the matrix does not list, runs it in ``test_kv_sqlite.py``.
"""

from __future__ import annotations

from conveyor.testing.kv import KeyValueContract


class TestKeyValue(KeyValueContract):
    """The contract, once per backend of the matrix's ``kv_url``."""
