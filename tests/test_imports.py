"""`import conveyor` stays cheap, and the layers of DESIGN.md hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEAVY = (
    "sqlalchemy",
    "psycopg",
    "alembic",
    "pydantic",
    "fsspec",
    "redis",
    "nats",
    "starlette",
    "fastapi",
    "uvicorn",
    "httpx",
    "numpy",
    "pandas",
    "pyarrow",
    "sklearn",
    "torch",
    "ray",
    "typer",
    "rich",
    "yaml",
    "orjson",
)


def _imported_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    modules = set()
    for line in out.stderr.splitlines():
        if "|" in line and not line.startswith("import time: self"):
            modules.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return modules


def test_import_conveyor_loads_no_driver_framework_or_ml_library() -> None:
    loaded = _imported_by("import conveyor")
    assert "conveyor" in loaded  # the measurement works
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_cli_help_does_not_import_capabilities() -> None:
    loaded = _imported_by("import conveyor.cli")
    assert not loaded & {"sqlalchemy", "psycopg", "alembic", "fsspec", "numpy", "pandas", "sklearn"}


def test_import_layers_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint)], capture_output=True, text=True, cwd=Path(__file__).parents[1]
    )
    assert result.returncode == 0, result.stdout + result.stderr
