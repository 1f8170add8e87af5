"""`import conveyor` stays cheap, and the layers of DESIGN.md hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


# -- the public surface of `import conveyor` ------------------------------------------------


def _public_names() -> set[str]:
    """What the package exposes: its own public attributes (not submodules, which appear as
    attributes once imported) and the names it loads on first use."""
    import types

    import conveyor

    own = {
        name
        for name, value in vars(conveyor).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    return own | set(conveyor._LAZY) | {"__version__"}


def test_all_is_exactly_what_the_package_exposes() -> None:
    """As httpx does: ``__all__`` lists every public name, sorted, and nothing else."""
    import conveyor

    assert conveyor.__all__ == sorted(_public_names())
    assert dir(conveyor) == sorted(conveyor.__all__)


def test_every_name_in_all_resolves_to_its_home_object() -> None:
    import importlib

    import conveyor

    for name in conveyor.__all__:
        value = getattr(conveyor, name)
        home = conveyor._LAZY.get(name)
        if home == f"conveyor.{name}":  # a subpackage (conveyor.rag), returned whole
            assert value is importlib.import_module(home), name
        elif home is not None:
            assert value is getattr(importlib.import_module(home), name), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        conveyor.nope  # noqa: B018


def test_every_public_error_and_the_main_verbs_are_exported() -> None:
    import conveyor
    import conveyor.errors
    import conveyor.pipelines.errors

    errors = {
        name
        for module in (conveyor.errors, conveyor.pipelines.errors)
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
        and not name.startswith("_")
    }
    assert errors == set(conveyor.errors.__all__) | set(conveyor.pipelines.errors.__all__)
    verbs = {
        "Project", "init_project", "load_spec", "ProjectSpec", "Registry", "run",
        "train_candidate", "evaluate_version", "optimize_version", "DriftDetector",
        "CheckResult", "Report", "run_gates", "Pipeline", "LocalRunner",
    }  # fmt: skip
    missing = (errors | verbs) - set(conveyor.__all__)
    assert not missing, sorted(missing)


def test_readme_python_imports_only_from_conveyor() -> None:
    """The README's Python examples use ``conveyor.NAME`` (or ``from conveyor import``) for
    Conveyor's own names, and each of those names is exported."""
    import re

    import conveyor

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    assert blocks
    code = re.sub(r"#.*", "", "\n".join(blocks))  # comments may name conveyor.yaml
    deep = re.findall(r"^\s*(?:from|import) conveyor\.\S+.*$", code, re.MULTILINE)
    assert not deep, deep
    used = set(re.findall(r"\bconveyor\.([A-Za-z_]\w*)", code))
    for line in re.findall(r"^\s*from conveyor import (.+)$", code, re.MULTILINE):
        used |= {n.strip() for n in line.strip("()").split(",") if n.strip()}
    assert used and used <= set(conveyor.__all__), sorted(used - set(conveyor.__all__))
