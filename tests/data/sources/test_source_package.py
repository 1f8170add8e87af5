"""The package's public names, and that importing it stays cheap."""

from __future__ import annotations

from pathlib import Path

import conveyor.data.sources as sources
from fresh_python import loaded_of


def test_all_names_resolve() -> None:
    for name in sources.__all__:
        assert getattr(sources, name) is not None, name
    assert set(sources.__all__) <= set(dir(sources))


def test_importing_the_package_loads_no_data_library() -> None:
    code = "import conveyor.data.sources"
    assert loaded_of(("pyarrow", "sqlalchemy", "httpx", "pydantic", "pandas"), code) == []


def test_builtin_sources_satisfy_the_protocol(tmp_path: Path) -> None:
    built = [
        sources.CSVSource(tmp_path / "x.csv"),
        sources.ParquetSource(tmp_path),
        sources.SQLSource("sqlite://", table="t"),
        sources.HTTPJSONSource("http://127.0.0.1/x"),
    ]
    for source in built:
        assert isinstance(source, sources.Source)
        assert source.describe()["kind"] == source.kind
        assert source.describe()["name"] == source.name
