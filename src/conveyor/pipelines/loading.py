"""Find pipelines from a target string, as the CLI is given them.

A target is ``module``, ``module:attribute``, ``path/to/file.py`` or
``path/to/file.py:attribute`` (the attribute may be dotted). Without an
attribute, every :class:`Pipeline` the module defines at top level is
found. A file is imported under a private module name with its folder put
on ``sys.path``, so it can import its neighbours.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from conveyor.errors import InvalidInputError, NotFoundError
from conveyor.pipelines.definition import Pipeline
from conveyor.pipelines.errors import PipelineDefinitionError

__all__ = ["load_pipeline", "load_pipelines", "split_target"]


def split_target(target: str) -> tuple[str, str | None]:
    """``(module or path, attribute or None)``; a Windows drive letter is not an attribute."""
    if not isinstance(target, str) or not target.strip():
        raise InvalidInputError(
            f"a pipeline target is 'module:attribute' or 'path/file.py:attribute', got {target!r}",
            field="target",
        )
    head, sep, tail = target.rpartition(":")
    if sep and head and all(part.isidentifier() for part in tail.split(".")):
        return head, tail
    return target, None


def load_pipelines(
    target: str, *, search_path: Iterable[str | os.PathLike[str]] = ()
) -> list[Pipeline]:
    """The pipeline ``target`` names, or every pipeline its module defines.

    ``search_path`` folders are added to ``sys.path`` first (the CLI adds
    the current folder and the project's, as ``python -m`` would).
    """
    for folder in search_path:
        _on_path(Path(folder))
    where, attribute = split_target(target)
    module = _import(where)
    if attribute is not None:
        value: Any = module
        for part in attribute.split("."):
            if not hasattr(value, part):
                found = ", ".join(p for p, _ in _pipelines_in(module)) or "none"
                raise NotFoundError(
                    f"{where} has no attribute {attribute!r} (pipelines it defines: {found})",
                    kind="pipeline",
                    target=target,
                )
            value = getattr(value, part)
        if not isinstance(value, Pipeline):
            raise InvalidInputError(
                f"{target} is a {type(value).__name__}, not a Pipeline",
                field="target",
                target=target,
            )
        return [value]
    found_pipelines = [pipeline for _, pipeline in _pipelines_in(module)]
    if not found_pipelines:
        raise NotFoundError(
            f"{where} defines no Pipeline at top level; name one as {where}:attribute",
            kind="pipeline",
            target=target,
        )
    return found_pipelines


def load_pipeline(target: str, *, search_path: Iterable[str | os.PathLike[str]] = ()) -> Pipeline:
    """The one pipeline ``target`` names; InvalidInputError if it is ambiguous."""
    pipelines = load_pipelines(target, search_path=search_path)
    if len(pipelines) > 1:
        names = ", ".join(p.name for p in pipelines)
        raise InvalidInputError(
            f"{target} defines several pipelines ({names}); name one as {target}:attribute",
            field="target",
            target=target,
        )
    return pipelines[0]


def _pipelines_in(module: ModuleType) -> list[tuple[str, Pipeline]]:
    seen: set[int] = set()
    out = []
    for name, value in vars(module).items():
        if isinstance(value, Pipeline) and id(value) not in seen:
            seen.add(id(value))
            out.append((name, value))
    return out


def _is_path(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def _import(where: str) -> ModuleType:
    if _is_path(where):
        return _import_file(Path(where))
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name is not None and where.startswith(exc.name):
            raise NotFoundError(
                f"no module named {where!r} (run from the folder that holds it, or give a "
                "path/to/file.py)",
                kind="module",
                target=where,
            ) from exc
        raise _failed(where, exc) from exc
    except PipelineDefinitionError:
        raise
    except Exception as exc:
        raise _failed(where, exc) from exc


def _import_file(path: Path) -> ModuleType:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise NotFoundError(f"pipeline file {path} does not exist", kind="file", path=str(path))
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    name = f"_conveyor_pipelines_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidInputError(f"{path} cannot be imported as Python", field="target")
    module = importlib.util.module_from_spec(spec)
    _on_path(path.parent)
    # Registered before running, as imports are: dataclasses and pickle look modules up.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except PipelineDefinitionError:
        del sys.modules[name]
        raise
    except Exception as exc:
        del sys.modules[name]
        raise _failed(str(path), exc) from exc
    return module


def _failed(where: str, exc: BaseException) -> PipelineDefinitionError:
    return PipelineDefinitionError(
        f"importing {where} failed: {type(exc).__name__}: {exc}", field="target", target=where
    )


def _on_path(folder: Path) -> None:
    entry = str(folder.expanduser().resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)
