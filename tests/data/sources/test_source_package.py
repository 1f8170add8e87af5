"""The package's public names, and that importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import conveyor.data.sources as sources


def test_all_names_resolve() -> None:
    for name in sources.__all__:
        assert getattr(sources, name) is not None, name
    assert set(sources.__all__) <= set(dir(sources))


def test_importing_the_package_loads_no_data_library() -> None:
    code = (
        "import sys, conveyor.data.sources as s; "
        "print(sorted(m for m in ('pyarrow', 'sqlalchemy', 'httpx', 'pydantic', 'pandas') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


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
