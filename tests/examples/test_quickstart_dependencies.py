"""``make demo`` installs only the demo's extras: every module the quickstart imports must
come with them.

The test suite runs in the development virtualenv, which has every extra, so a
quickstart module importing a library only ``[dev]`` brings (``nats`` once) passed
every test and failed ``make demo`` on a fresh clone (``openai`` too, in a function).
Here the quickstart's imports are read with ``ast`` (but those in a ``try`` that handles
ImportError: optional steps) and each one's distribution is looked for
in what ``pip install -e '.[<the Makefile's demo extras>]'`` installs, resolved from
the installed packages' own metadata.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"


def _demo_extras() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    found = re.search(r"\.stamp-demo:.*\n\t\$\(PIP\) install -e '\.\[([^\]]*)\]'", text)
    assert found, "the Makefile's demo stamp no longer installs '.[extras]'"
    return {e.strip() for e in found[1].split(",")}


def _closure(extras: set[str]) -> set[str]:
    """Canonical names of conveyor and every distribution it pulls in with ``extras``."""
    seen: set[str] = set()
    todo: list[tuple[str, set[str]]] = [("conveyor", extras)]
    while todo:
        name, wanted = todo.pop()
        key = f"{canonicalize_name(name)}[{','.join(sorted(wanted))}]"
        if key in seen:
            continue
        seen.add(key)
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({"extra": e}) for e in (wanted or {""})
            ):
                continue
            todo.append((req.name, set(req.extras)))
    return {k.split("[")[0] for k in seen}


def _imports(path: Path) -> set[str]:
    """Top-level package names ``path`` imports anywhere (at load time or in a function
    the quickstart calls), but for imports in a ``try`` that handles ImportError (an
    optional step that says how to enable it)."""
    tree = ast.parse(path.read_text())
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_module_the_quickstart_imports_comes_with_the_demo_extras() -> None:
    installed = _closure(_demo_extras())
    local = {p.stem for p in QUICKSTART.glob("*.py")}
    owners = metadata.packages_distributions()
    missing: dict[str, list[str]] = {}
    for path in sorted(QUICKSTART.glob("*.py")):
        for module in _imports(path):
            if module in sys.stdlib_module_names or module in local or module == "conveyor":
                continue
            dists = {canonicalize_name(d) for d in owners.get(module, [])}
            assert dists, f"{path.name} imports {module}, which no installed package provides"
            if not dists & installed:
                missing.setdefault(path.name, []).append(module)
    assert not missing, (
        f"imported by the quickstart but not installed by make demo's extras: {missing}; "
        "add its extra to the Makefile's demo stamp, or make the step optional"
    )


def test_the_closure_is_read_from_real_metadata() -> None:
    # the helper must see what the extras bring, or the test above proves nothing
    closure = _closure({"serve"})
    assert {"uvicorn", "starlette", "prometheus-client"} <= closure
    assert "nats-py" not in _closure({"serve"})
    assert "nats-py" in _closure({"nats"})
