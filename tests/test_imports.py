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


def test_capabilities_use_each_other_only_as_declared() -> None:
    """A capability imports another only if it ``requires`` it (or governance, which every
    capability may use), and only through that package's public modules, never a ``_private``
    one. The foundation imports no capability at all (the layers contract above)."""
    import grimp

    from conveyor.capability import capabilities

    graph = grimp.build_graph("conveyor")
    declared = {c.name: set(c.requires) | {"governance"} for c in capabilities()}
    # Requirements are transitive: training requires registry, which requires data.
    changed = True
    while changed:
        changed = False
        for name, needs in declared.items():
            wider = needs.union(*(declared.get(n, set()) for n in needs))
            if wider != needs:
                declared[name], changed = wider, True
    problems = []
    for name, allowed in declared.items():
        for other in set(declared) - {name}:
            chains = graph.find_shortest_chains(
                importer=f"conveyor.{name}", imported=f"conveyor.{other}", as_packages=True
            )
            direct = [c for c in chains if len(c) == 2]
            if direct and other not in allowed:
                problems.append(f"{name} imports {other} ({direct[0]}) without requiring it")
            private = [c for c in direct if any(p.startswith("_") for p in c[1].split(".")[2:])]
            if private:
                problems.append(f"{name} imports a private module of {other}: {private[0]}")
    assert not problems, "\n".join(problems)
