"""Where data comes from: CSV, Parquet, SQL databases and JSON over HTTP.

Each source reads a batch as an :class:`Extract` (an Arrow table, a JSON
description of its origin, and the new high-water mark when it reads
incrementally); :func:`incremental` reads past the stored watermark and
advances it only once the caller has stored the rows.

The public names load on first use, so importing this package does not
import pyarrow, SQLAlchemy or httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor._lazy import lazy_exports

if TYPE_CHECKING:
    from conveyor.data.sources.base import BaseSource, Extract, Source
    from conveyor.data.sources.files import CSVSource, ParquetSource
    from conveyor.data.sources.http import HTTPJSONSource, Pagination
    from conveyor.data.sources.spec import source_from_spec
    from conveyor.data.sources.sql import SQL_SOURCES, SQLSource
    from conveyor.data.sources.watermarks import Watermark, WatermarkRepository, incremental

__all__ = [
    "SQL_SOURCES",
    "BaseSource",
    "CSVSource",
    "Extract",
    "HTTPJSONSource",
    "Pagination",
    "ParquetSource",
    "SQLSource",
    "Source",
    "Watermark",
    "WatermarkRepository",
    "incremental",
    "source_from_spec",
]

_HOMES = {
    "BaseSource": "conveyor.data.sources.base",
    "Extract": "conveyor.data.sources.base",
    "Source": "conveyor.data.sources.base",
    "CSVSource": "conveyor.data.sources.files",
    "ParquetSource": "conveyor.data.sources.files",
    "HTTPJSONSource": "conveyor.data.sources.http",
    "Pagination": "conveyor.data.sources.http",
    "source_from_spec": "conveyor.data.sources.spec",
    "SQLSource": "conveyor.data.sources.sql",
    "SQL_SOURCES": "conveyor.data.sources.sql",
    "Watermark": "conveyor.data.sources.watermarks",
    "WatermarkRepository": "conveyor.data.sources.watermarks",
    "incremental": "conveyor.data.sources.watermarks",
}


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
